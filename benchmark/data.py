"""Datasets: every image scaled to [0, 1], N×C×H×W float32, labels as int64."""

from __future__ import annotations

import errno
import gzip
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from platformdirs import user_cache_dir

from advbench.errors import BenchError, UsageError

SPLITS = ("train", "test")


@dataclass
class Split:
    """One split of a dataset, held in memory (the built-in datasets fit easily).

    ``files`` maps each file it was read from to the sha256 of its bytes on disk: the run's
    manifest records them (``data``), so a wrong ``--data-root`` shows (empty when a plugin
    does not say). ``fingerprint`` is
    the memo of :func:`advbench.running.model_cache.data_fingerprint`.
    """

    x: torch.Tensor
    y: torch.Tensor
    files: dict[str, str] = field(default_factory=dict)
    fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at ``index``; drawn from the same files (the index has its own hash)."""
        return Split(self.x[index], self.y[index], dict(self.files))


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, as ``sha256sum`` prints it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()



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
    if ndim > 4:  # images are N×H×W(×C), labels N: more dimensions is a damaged header
        raise BenchError(f"{path} is truncated or corrupt: its header says {ndim} dimensions")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)  # Python integers: huge dimensions do not wrap
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
IDX_FILES = ", ".join(f"{stem}[.gz]" for stems in IDX_STEMS.values() for stem in stems)


def default_data_root() -> Path:
    """Where datasets are downloaded when no --data-root is given."""
    return Path(user_cache_dir("advbench")) / "data"


def check_labels(labels: np.ndarray, path: Path, num_classes: int) -> None:
    """Labels outside 0..num_classes-1 would fail deep inside training: refuse them here."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"{path} holds labels {labels.min()}..{labels.max()}; this dataset "
                         f"has classes 0..{num_classes - 1}: replace the file")


def check_images(images: np.ndarray, path: Path, shape: tuple[int, int, int]) -> None:
    """Images of another size would be trained on and attacked as if they were this dataset."""
    found = tuple(images.shape[1:])
    if not len(images) or found != tuple(shape[1:]):
        size = "no images" if not len(images) else "×".join(map(str, found)) + " images"
        raise UsageError(f"{path} holds {size}; this dataset needs "
                         f"{'×'.join(map(str, shape[1:]))} images: replace the file")


def check_rank(array: np.ndarray, path: Path, rank: int, what: str) -> None:
    """An IDX file must hold an array of the rank its name says."""
    if array.ndim != rank:
        raise BenchError(f"{path} holds a rank-{array.ndim} array {tuple(array.shape)}; "
                         f"{what} need rank {rank}: replace the file")


def missing_reason(path: Path) -> str:
    """Why ``path`` cannot be used as a folder, in words: a file, a symlink loop, a broken
    symlink, or nothing there."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "runs into a symlink loop"
        if os.path.islink(path):
            return f"is a broken symlink (to {os.readlink(path)})"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"cannot be read ({exc.strerror})"
    return "is a file, not a folder"


def load_idx_split(dataset: Dataset, split: str, folders: list[Path]) -> Split | None:
    """Load an MNIST-format split from the first folder holding both of its files, else None;
    images must have the dataset's size and labels its classes."""
    check_split(split)
    images_stem, labels_stem = IDX_STEMS[split]
    for folder in folders:
        images = find_first([folder / f"{images_stem}.gz", folder / images_stem])
        labels = find_first([folder / f"{labels_stem}.gz", folder / labels_stem])
        if images and labels:
            x, y = read_idx(images), read_idx(labels)
            check_rank(x, images, 3, "images (count × height × width)")
            check_rank(y, labels, 1, "labels (one per image)")
            if len(x) != len(y):
                raise BenchError(f"{images} and {labels} do not match: {len(x)} images, "
                                 f"{len(y)} labels; replace one of them")
            check_images(x, images, dataset.shape)
            check_labels(y, labels, dataset.num_classes)
            files = {str(path.resolve()): file_sha256(path) for path in (images, labels)}
            return Split(images_to_tensor(x), torch.from_numpy(y.astype(np.int64)), files)
    return None


def given_root(root: Path, title: str, expected: str) -> Path:
    """A --data-root the user gave must be a folder: it is used as it is or refused, never
    replaced by another copy of the data (the manifest would record the wrong source)."""
    if not root.is_dir():
        raise UsageError(f"{title} not found: --data-root {root} {missing_reason(root)}; pass "
                         f"the folder holding {expected}")
    return root


def load_idx_root(dataset: Dataset, split: str, root: Path, title: str, raw: str) -> Split:
    """An MNIST-format split from the user's --data-root (or its ``raw``/raw/ subfolder, as
    torchvision lays it out), or a one-line refusal naming the folder and the files."""
    expected = f"{IDX_FILES} (or {raw}/raw/ holding them)"
    given_root(root, title, expected)
    loaded = load_idx_split(dataset, split, [root, root / raw / "raw"])
    if loaded is None:
        images, labels = IDX_STEMS[split]
        raise UsageError(f"{title} not found under --data-root {root}: expected {images}[.gz] "
                         f"and {labels}[.gz] there or in {raw}/raw/")
    return loaded


def download_with_torchvision(class_name: str, root: Path) -> bool:
    """Try torchvision's downloader ``torchvision.datasets.<class_name>`` (needs a network);
    report success instead of raising. torchvision is imported here, not at plugin load: its
    import pulls in every torchvision model and costs every ``bench`` command about 2 s."""
    try:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, class_name)
        dataset_class(str(root), train=True, download=True)
        dataset_class(str(root), train=False, download=True)
    except Exception:  # no network, a proxy, a full disk: the caller explains what to do
        return False
    return True


class IdxDataset(Dataset):
    """A dataset in MNIST's IDX format, found in torchvision's on-disk layout: the one loader
    MNIST-like plugins share. A subclass declares, besides :class:`Dataset`'s attributes,
    ``title`` (the name in messages), ``torchvision_name`` (torchvision's downloader class, also
    the ``<name>/raw/`` folder) and, optionally, ``system_folders`` (where a system package puts
    the files) and ``missing_hint`` (what to do when nothing is found)."""

    title: ClassVar[str]
    torchvision_name: ClassVar[str]
    system_folders: ClassVar[tuple[Path, ...]] = ()
    missing_hint: ClassVar[str] = ""

    def load(self, split: str, root: Path | None) -> Split:
        """From ``root`` alone when given (refused if the files are not there); otherwise the
        download folder, then the system folders, then a download where a network exists."""
        raw = self.torchvision_name
        if root is not None:
            return load_idx_root(self, split, root, self.title, raw)
        cache = default_data_root()
        folders = [cache, cache / raw / "raw", *self.system_folders]
        loaded = load_idx_split(self, split, folders)
        if loaded is None and download_with_torchvision(raw, cache):
            loaded = load_idx_split(self, split, folders)
        if loaded is None:
            raise BenchError(self.missing_hint or (
                f"{self.title} not found under {cache} and the download failed: pass "
                f"--data-root DIR holding {raw}/raw/ (torchvision's layout), or run once where "
                "a network is reachable"))
        return loaded
