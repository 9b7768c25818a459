"""A small convolutional network without pooling, made for certified (IBP) training.

Gowal et al. 2018's "small" model: conv 16×4×4 stride 2 + ReLU, conv 32×4×4 stride 1 + ReLU,
FC 100 + ReLU, FC. No max-pooling (CROWN back-substitutes through every layer) and few, wide
layers (interval bounds loosen with depth), so IBP training certifies far more of it than of the
seed CNN at the same cost. Select it with ``--model ibp-cnn``.
"""

from __future__ import annotations

from torch import nn

from advbench import ModelPlugin, hookimpl


def conv_output(size: int, kernel: int, stride: int) -> int:
    """Side of an unpadded convolution's output."""
    return (size - kernel) // stride + 1


class IBPCNN(ModelPlugin):
    name = "ibp-cnn"
    description = "Gowal et al. 2018 small CNN for certified training: 2 convs, FC-100, no pooling"

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        channels, height, width = in_shape
        height, width = conv_output(height, 4, 2), conv_output(width, 4, 2)
        height, width = conv_output(height, 4, 1), conv_output(width, 4, 1)
        return nn.Sequential(
            nn.Conv2d(channels, 16, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * height * width, 100),
            nn.ReLU(),
            nn.Linear(100, num_classes),
        )


@hookimpl
def bench_models() -> list[type[ModelPlugin]]:
    return [IBPCNN]
