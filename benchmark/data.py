"""Datasets: every image scaled to [0, 1], N×C×H×W float32, labels as int64."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .errors import BenchError

SPLITS = ("train", "test")


@dataclass
class Split:
    """One split of a dataset, held in memory (the built-in datasets fit easily)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.x[index], self.y[index])


class Dataset:
    """Base class of dataset plugins.

    Class attributes: ``name``, ``num_classes``, ``shape`` (C, H, W), ``classes`` (label names)
    and ``default_eps`` (the ε the runner uses per norm unless ``--eps`` says otherwise).
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    shape: ClassVar[tuple[int, int, int]]
    classes: ClassVar[tuple[str, ...]] = ()
    default_eps: ClassVar[dict[str, float]] = {}
    description: ClassVar[str] = ""

    def load(self, split: str, root: Path | None) -> Split:
        """Return ``split`` (``train`` or ``test``), reading from ``root`` when given."""
        raise NotImplementedError


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, checking its header against its size.

    torchvision's reader wants uncompressed files; Debian ships them gzipped, so read both here.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise BenchError(f"cannot read {path}: {exc} (delete or replace the file)") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise BenchError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise BenchError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, header says {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def find_first(candidates: list[Path]) -> Path | None:
    """The first existing path among ``candidates``."""
    return next((path for path in candidates if path.is_file()), None)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W or N×H×W×C → float32 N×C×H×W in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)
    else:
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.contiguous().float().div_(255.0)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise BenchError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_idx_split(split: str, folders: list[Path]) -> Split | None:
    """Load an MNIST-format split from the first folder holding both of its files, else None."""
    check_split(split)
    images_stem, labels_stem = IDX_STEMS[split]
    for folder in folders:
        images = find_first([folder / f"{images_stem}.gz", folder / images_stem])
        labels = find_first([folder / f"{labels_stem}.gz", folder / labels_stem])
        if images and labels:
            x, y = read_idx(images), read_idx(labels)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise BenchError(f"{images} and {labels} do not match: {x.shape} vs {y.shape}")
            return Split(images_to_tensor(x), torch.from_numpy(y.astype(np.int64)))
    return None


def download_with_torchvision(dataset_class: type, root: Path) -> bool:
    """Try torchvision's downloader (needs a network); report success instead of raising."""
    try:
        dataset_class(str(root), train=True, download=True)
        dataset_class(str(root), train=False, download=True)
    except Exception:  # no network, a proxy, a full disk: the caller explains what to do
        return False
    return True
