"""Helpers of tests/unit/test_bounds.py and tests/e2e/test_bounds_e2e.py."""

from __future__ import annotations

import torch
from torch import nn

from advbench.algorithms.bounds import (
    input_box,
)
from advbench_plugins.seed_cnn import SeedCNN

TOL = 1e-5


def true_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit_y − logit_j at x: (batch, classes)."""
    logits = model(x)
    return logits.gather(1, y[:, None]) - logits


def sampled_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    draws: int = 200) -> torch.Tensor:
    """Smallest margins over uniform draws and random corners of the ball: (batch, K)."""
    generator = torch.Generator().manual_seed(0)
    lower, upper = input_box(x, eps)
    best = true_margins(model, x, y)
    for corner in (False, True):
        noise = torch.rand((draws, *x.shape), generator=generator, dtype=x.dtype)
        if corner:
            noise = noise.round()
        points = lower + (upper - lower) * noise
        margins = true_margins(model, points.flatten(0, 1), y.repeat(draws))
        best = torch.minimum(best, margins.view(draws, *best.shape).min(0).values)
    return best


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(),
                         nn.Sequential(nn.Linear(16, 16), nn.ReLU()), nn.Linear(16, 4))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(6)
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 6, 3), norm, nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 1 * 1, 10), nn.ReLU(),
                         nn.Linear(10, 3)).eval()


NETS = {  # model factory, input shape, eps
    "mlp": (mlp, (1, 3, 4), 0.08),
    "cnn": (small_cnn, (1, 8, 8), 0.05),
    "seed-cnn": (lambda: SeedCNN().build((1, 28, 28), 10), (1, 28, 28), 0.01),
}


BATCH = {"mlp": 6, "cnn": 6, "seed-cnn": 3}


def net_and_batch(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    factory, shape, eps = NETS[name]
    model = factory().double()
    generator = torch.Generator().manual_seed(2)
    x = torch.rand((BATCH[name], *shape), generator=generator, dtype=torch.float64)
    y = model(x).argmax(1)
    y[::2] = (y[::2] + 1) % model(x[:1]).shape[1]  # some wrong labels: negative margins too
    return model, x, y, eps
