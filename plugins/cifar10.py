"""CIFAR-10 (Krizhevsky 2009): 60k 32×32 colour images, 10 classes.

Reads the dataset's *binary* distribution (``cifar-10-batches-bin``): plain bytes, no pickle is
ever loaded from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from advbench import BenchError, Dataset, Split, UsageError, hookimpl
from advbench.data import (
    check_labels,
    check_split,
    default_data_root,
    file_sha256,
    given_root,
    images_to_tensor,
)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
RECORD = 1 + 3 * 32 * 32
NUM_CLASSES = 10


def read_records(path: Path) -> np.ndarray:
    """One file's records of one label byte then 3072 pixel bytes, labels checked."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise BenchError(f"{path} is truncated or corrupt: {raw.size} bytes, not records of "
                         f"{RECORD}")
    records = raw.reshape(-1, RECORD)
    check_labels(records[:, 0], path, NUM_CLASSES)
    return records


def read_batches(paths: list[Path]) -> Split:
    """The records of ``paths`` as images (R, G, B planes of 32×32) and labels."""
    records = np.concatenate([read_records(path) for path in paths])
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    files = {str(path.resolve()): file_sha256(path) for path in paths}
    return Split(images_to_tensor(images), labels, files)


class CIFAR10(Dataset):
    name = "cifar10"
    num_classes = NUM_CLASSES
    shape = (3, 32, 32)
    classes = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
    default_eps = {"linf": 8 / 255, "l2": 0.5, "l1": 12, "l0": 1}
    description = "CIFAR-10 binary batches under --data-root, or downloaded"

    def load(self, split: str, root: Path | None) -> Split:
        """From ``root`` alone when given (refused if a batch is missing); otherwise the
        download folder, downloading once where a network is reachable."""
        check_split(split)
        expected = f"{FOLDER}/ with {', '.join(FILES['train'] + FILES['test'])}"
        if root is not None:
            given_root(root, "CIFAR-10", expected)
        folder = (root or default_data_root()) / FOLDER
        paths = [folder / name for name in FILES[split]]
        missing = [path.name for path in paths if not path.is_file()]
        if missing and root is not None:
            raise UsageError(f"CIFAR-10 not found under --data-root {root}: expected "
                             f"{expected} ({', '.join(missing)} missing)")
        if missing:
            try:  # torchvision imported only here: its import costs every command ~2 s
                from torchvision.datasets.utils import download_and_extract_archive

                download_and_extract_archive(URL, str(folder.parent))
            except Exception as exc:
                raise BenchError(
                    f"CIFAR-10 not found under {folder} and download failed ({exc}); "
                    f"pass --data-root DIR holding {FOLDER}/"
                ) from exc
        return read_batches(paths)


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [CIFAR10]
