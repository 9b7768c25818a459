"""A small ResNet (He et al. 2016) for CIFAR-10: three stages of two basic blocks."""

from __future__ import annotations

import torch
from torch import nn

from advbench import ModelPlugin, hookimpl


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallResNet(ModelPlugin):
    name = "resnet"
    description = "small ResNet (3 stages × 2 basic blocks, widths 16/32/64) for CIFAR-10"

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = [
            nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        ]
        inputs = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            layers += [BasicBlock(inputs, width, stride), BasicBlock(width, width, 1)]
            inputs = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, num_classes)]
        return nn.Sequential(*layers)


@hookimpl
def bench_models() -> list[type[ModelPlugin]]:
    return [SmallResNet]
