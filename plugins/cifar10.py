"""CIFAR-10 (Krizhevsky 2009), the seed report's dataset: 60k 32×32 colour images, 10 classes.

Reads the dataset's *binary* distribution (``cifar-10-batches-bin``): plain bytes, no pickle is
ever loaded from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir
from torchvision.datasets.utils import download_and_extract_archive

from advbench import BenchError, Dataset, Split, hookimpl
from advbench.data import check_split, images_to_tensor

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
RECORD = 1 + 3 * 32 * 32


def read_batches(paths: list[Path]) -> Split:
    """Records of one label byte then 3072 pixel bytes (R, G, B planes of 32×32)."""
    chunks = []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise BenchError(f"{path} is truncated or corrupt: {raw.size} bytes, not records of "
                             f"{RECORD}")
        chunks.append(raw.reshape(-1, RECORD))
    records = np.concatenate(chunks)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) > 9:
        raise BenchError(f"{paths[0]} holds labels above 9: not CIFAR-10's binary format")
    return Split(images_to_tensor(images), labels)


class CIFAR10(Dataset):
    name = "cifar10"
    num_classes = 10
    shape = (3, 32, 32)
    classes = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
    default_eps = {"linf": 8 / 255, "l2": 0.5, "l0": 1}
    description = "CIFAR-10 binary batches under --data-root, or downloaded"

    def load(self, split: str, root: Path | None) -> Split:
        check_split(split)
        root = root or Path(user_cache_dir("advbench")) / "data"
        paths = [root / FOLDER / name for name in FILES[split]]
        if not all(path.is_file() for path in paths):
            try:
                download_and_extract_archive(URL, str(root))
            except Exception as exc:
                raise BenchError(
                    f"CIFAR-10 not found under {root / FOLDER} and download failed ({exc}); "
                    "pass --data-root DIR holding cifar-10-batches-bin/"
                ) from exc
        return read_batches(paths)


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [CIFAR10]
