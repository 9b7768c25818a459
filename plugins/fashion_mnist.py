"""Fashion-MNIST (Xiao et al. 2017): 70k 28×28 greyscale images of clothes, 10 classes."""

from __future__ import annotations

from pathlib import Path

from advbench import Dataset, hookimpl
from advbench.data import IdxDataset

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


class FashionMNIST(IdxDataset):
    name = "fashion-mnist"
    title = "Fashion-MNIST"
    torchvision_name = "FashionMNIST"
    system_folders = (DEBIAN_DIR,)
    missing_hint = ("Fashion-MNIST not found: run 'apt-get install dataset-fashion-mnist' or "
                    "pass --data-root DIR holding train-images-idx3-ubyte.gz and its siblings")
    num_classes = 10
    shape = (1, 28, 28)
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    default_eps = {"linf": 0.1, "l2": 1.5, "l1": 10, "l0": 1}
    description = "Fashion-MNIST from Debian's dataset-fashion-mnist, --data-root or download"


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [FashionMNIST]
