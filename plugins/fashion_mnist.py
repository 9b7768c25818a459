"""Fashion-MNIST (Xiao et al. 2017): 70k 28×28 greyscale images of clothes, 10 classes."""

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

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


class FashionMNIST(Dataset):
    name = "fashion-mnist"
    num_classes = 10
    shape = (1, 28, 28)
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    default_eps = {"linf": 0.1, "l2": 1.5, "l0": 1}
    description = "Fashion-MNIST from Debian's dataset-fashion-mnist, --data-root or download"

    def load(self, split: str, root: Path | None) -> Split:
        """From ``root`` alone when given (refused if the files are not there); otherwise the
        download folder, then Debian's package, then a download."""
        if root is not None:
            return load_idx_root(self, split, root, "Fashion-MNIST", "FashionMNIST")
        cache = default_data_root()
        folders = [cache, cache / "FashionMNIST" / "raw", DEBIAN_DIR]
        loaded = load_idx_split(self, split, folders)
        if loaded is None and download_with_torchvision(torchvision.datasets.FashionMNIST, cache):
            loaded = load_idx_split(self, split, folders)
        if loaded is None:
            raise BenchError(
                "Fashion-MNIST not found: run 'apt-get install dataset-fashion-mnist' or pass "
                "--data-root DIR holding train-images-idx3-ubyte.gz and its siblings"
            )
        return loaded


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [FashionMNIST]
