"""bench's default model, a small CNN: (Conv + ReLU + MaxPool) × 3 + AvgPool + FC + ReLU + FC.

Built in channels-last memory format: on CPU its max-pooling is about ten times faster in that
layout (measured in ``benchmarks/bench_layout.py``), a forward pass about twice, a training
step about a third. Values are the same up to float rounding (1e-8 on the logits).
"""

from __future__ import annotations

import torch
from torch import nn

from advbench import ModelPlugin, hookimpl


class SeedCNN(ModelPlugin):
    name = "seed-cnn"
    description = "small CNN: 3×(conv3×3+ReLU+maxpool), global avg-pool, FC-ReLU-FC"

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        channels = in_shape[0]
        layers: list[nn.Module] = []
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        model = nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
        return model.to(memory_format=torch.channels_last)


@hookimpl
def bench_models() -> list[type[ModelPlugin]]:
    return [SeedCNN]
