"""MNIST (LeCun et al. 1998): 70k 28×28 greyscale handwritten digits, 10 classes."""

from __future__ import annotations

from pathlib import Path

import torchvision

from advbench import BenchError, Dataset, Split, hookimpl
from advbench.data import (
    default_data_root,
    download_with_torchvision,
    load_idx_root,
    load_idx_split,
)


class MNIST(Dataset):
    name = "mnist"
    num_classes = 10
    shape = (1, 28, 28)
    classes = tuple(str(digit) for digit in range(10))
    default_eps = {"linf": 0.1, "l2": 1.5, "l0": 1}
    description = "MNIST in torchvision's on-disk layout under --data-root, or downloaded"

    def load(self, split: str, root: Path | None) -> Split:
        """From ``root`` alone when given (refused if the files are not there); otherwise the
        download folder, downloading once where a network is reachable."""
        if root is not None:
            return load_idx_root(self, split, root, "MNIST", "MNIST")
        cache = default_data_root()
        folders = [cache, cache / "MNIST" / "raw"]
        loaded = load_idx_split(self, split, folders)
        if loaded is None and download_with_torchvision(torchvision.datasets.MNIST, cache):
            loaded = load_idx_split(self, split, folders)
        if loaded is None:
            raise BenchError(
                f"MNIST not found under {cache} and the download failed: pass --data-root DIR "
                "holding MNIST/raw/ (torchvision's layout), or run once where a network is "
                "reachable"
            )
        return loaded


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [MNIST]
