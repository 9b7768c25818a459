"""Fixtures of both tiers: the registry, real Fashion-MNIST subsets, a tiny untrained net.

The seed CNN trained once per session lives in e2e/conftest.py, out of the unit tier's reach."""

from __future__ import annotations

import os

# Tests must not be contaminated by whatever third-party plugins are installed.
os.environ["BENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest
import torch

from advbench import Split, load_registry

# Two threads, under pytest-xdist too: the thread count changes a trained model's floats, and
# e2e/test_bpda.py's surrogate test fails with the model one thread trains.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture(scope="session")
def fashion(registry) -> dict[str, Split]:
    """Real Fashion-MNIST (Debian's files): 10k training and 1k test samples."""
    dataset = registry.get("dataset", "fashion-mnist").cls()
    train, test = dataset.load("train", None), dataset.load("test", None)
    return {"train": train.subset(torch.arange(10_000)), "test": test.subset(torch.arange(1000))}


@pytest.fixture
def batch(fashion) -> tuple[torch.Tensor, torch.Tensor]:
    """500 real test images and labels."""
    test = fashion["test"]
    return test.x[:500], test.y[:500]


@pytest.fixture
def tiny() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded 10-class conv net on six random 8×8 images, labelled by its own predictions:
    what the library adapters' tests attack, where counting queries needs no trained model,
    only many cheap calls."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(144, 10)).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return net, x, net(x).argmax(dim=1)
