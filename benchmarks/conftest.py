"""Benchmarks load only bench's own plugins, like the tests, and share one way to get a model."""

import os

os.environ["BENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest
import torch

from advbench import load_registry
from advbench.algorithms.training import train_classifier
from advbench.defense import TrainContext, TrainSettings


@pytest.fixture(scope="module")
def seed_cnn_and_test():
    """``make(n_train)``: the seed CNN after one epoch on the first ``n_train`` Fashion-MNIST
    training images (frozen, eval mode), and the test split's images and labels."""

    def make(n_train: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        registry = load_registry()
        dataset = registry.get("dataset", "fashion-mnist").cls()
        train, test = dataset.load("train", None), dataset.load("test", None)
        torch.manual_seed(0)
        model = registry.get("model", "seed-cnn").cls().build((1, 28, 28), 10)
        train_classifier(model, train.subset(torch.arange(n_train)),
                         TrainContext(TrainSettings(epochs=1), torch.device("cpu"), seed=0),
                         lambda m, x, y, p: torch.nn.functional.cross_entropy(m(x), y))
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model.eval(), test.x, test.y

    return make


@pytest.fixture(scope="module")
def seed_cnn_cell(seed_cnn_and_test):
    """The seed CNN after one epoch on 10k images, the first 500 test images and its clean
    predictions (batches of 250): the cell the overhead benchmarks time."""
    from advbench import Split
    from advbench.running.evaluate import predict

    model, x, y = seed_cnn_and_test(10_000)
    data = Split(x[:500], y[:500])
    return model, data, predict(model, data.x, 250, torch.device("cpu"))
