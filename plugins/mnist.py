"""MNIST (LeCun et al. 1998): 70k 28×28 greyscale handwritten digits, 10 classes."""

from __future__ import annotations

from advbench import Dataset, hookimpl
from advbench.data import IdxDataset


class MNIST(IdxDataset):
    name = "mnist"
    title = "MNIST"
    torchvision_name = "MNIST"
    num_classes = 10
    shape = (1, 28, 28)
    classes = tuple(str(digit) for digit in range(10))
    default_eps = {"linf": 0.1, "l2": 1.5, "l1": 10, "l0": 1}
    description = "MNIST in torchvision's on-disk layout under --data-root, or downloaded"


@hookimpl
def bench_datasets() -> list[type[Dataset]]:
    return [MNIST]
