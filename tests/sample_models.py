"""A model factory for the ``--model package.module:factory`` tests."""

from torch import nn


def tiny_mlp(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    channels, height, width = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, 32), nn.ReLU(),
                         nn.Linear(32, num_classes))


def not_a_model() -> str:
    return "nope"
