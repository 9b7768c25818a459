"""The seed report's CNN: (Conv + ReLU + MaxPool) × 3 + AvgPool + FC + ReLU + FC."""

from __future__ import annotations

from torch import nn

from advbench import ModelPlugin, hookimpl


class SeedCNN(ModelPlugin):
    name = "seed-cnn"
    description = "seed report CNN: 3×(conv3×3+ReLU+maxpool), global avg-pool, FC-ReLU-FC"

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        channels = in_shape[0]
        layers: list[nn.Module] = []
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        return nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )


@hookimpl
def bench_models() -> list[type[ModelPlugin]]:
    return [SeedCNN]
