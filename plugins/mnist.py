"""MNIST (LeCun et al. 1998): 70k 28×28 greyscale handwritten digits, 10 classes."""

from __future__ import annotations

from pathlib import Path

import torchvision
from platformdirs import user_cache_dir

from advbench import BenchError, Dataset, Split, hookimpl
from advbench.data import download_with_torchvision, load_idx_split


class MNIST(Dataset):
    name = "mnist"
    num_classes = 10
    shape = (1, 28, 28)
    classes = tuple(str(digit) for digit in range(10))
    default_eps = {"linf": 0.1, "l2": 1.5, "l0": 1}
    description = "MNIST in torchvision's on-disk layout under --data-root, or downloaded"

    def load(self, split: str, root: Path | None) -> Split:
        root = root or Path(user_cache_dir("advbench")) / "data"
        folders = [root, root / "MNIST" / "raw"]
        loaded = load_idx_split(split, folders)
        if loaded is None and download_with_torchvision(torchvision.datasets.MNIST, root):
            loaded = load_idx_split(split, folders)
        if loaded is None:
            raise BenchError(
                f"MNIST not found under {root}: pass --data-root DIR holding MNIST/raw/ "
                "(torchvision's layout), or run once where a network is reachable"
            )
        return loaded


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [MNIST]
