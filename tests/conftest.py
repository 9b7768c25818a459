"""Shared fixtures: real Fashion-MNIST subsets and a seed CNN trained once per session."""

from __future__ import annotations

import os

# Tests must not be contaminated by whatever third-party plugins are installed.
os.environ["BENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest
import torch

from advbench import Split, load_registry
from advbench.algorithms.training import train_classifier
from advbench.defense import TrainContext, TrainSettings

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


@pytest.fixture(scope="session")
def trained_cnn(registry, fashion) -> torch.nn.Module:
    """The seed CNN after 2 epochs on 10k real images (~77 % test accuracy), eval mode, frozen."""
    torch.manual_seed(0)
    model = registry.get("model", "seed-cnn").cls().build((1, 28, 28), 10)
    ctx = TrainContext(TrainSettings(epochs=2), torch.device("cpu"), seed=0)
    train_classifier(model, fashion["train"], ctx,
                     lambda m, x, y, p: torch.nn.functional.cross_entropy(m(x), y))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


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
