"""Fashion-MNIST (Xiao et al. 2017): 70k 28×28 greyscale images of clothes, 10 classes."""

from __future__ import annotations

from pathlib import Path

import torchvision
from platformdirs import user_cache_dir

from advbench import BenchError, Dataset, Split, hookimpl
from advbench.data import download_with_torchvision, load_idx_split

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
        root = root or Path(user_cache_dir("advbench")) / "data"
        folders = [root, root / "FashionMNIST" / "raw", DEBIAN_DIR]
        loaded = load_idx_split(split, folders)
        if loaded is None and download_with_torchvision(torchvision.datasets.FashionMNIST, root):
            loaded = load_idx_split(split, folders)
        if loaded is None:
            raise BenchError(
                "Fashion-MNIST not found: run 'apt-get install dataset-fashion-mnist' or pass "
                "--data-root DIR holding train-images-idx3-ubyte.gz and its siblings"
            )
        return loaded


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [FashionMNIST]
