"""End-to-end fixtures: a real model trained once per session (seconds), for the tests that
attack or run it. tests/unit cannot see this fixture: the unit tier trains nothing."""

from __future__ import annotations

import pytest
import torch

from advbench.algorithms.training import train_classifier
from advbench.defense import TrainContext, TrainSettings


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
