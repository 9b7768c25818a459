"""Helpers of tests/e2e/test_blackbox.py and tests/unit/test_blackbox_unit.py."""

from __future__ import annotations

import torch
from torch import nn

from advbench import AttackContext


def tiny_model(shape: tuple[int, int, int], seed: int, scale: float = 1.0) -> nn.Module:
    """A random linear classifier (10 classes) on images of ``shape``, frozen."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], 10))
    with torch.no_grad():
        model[1].weight.mul_(scale)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def tiny_batch(model: nn.Module, n: int, shape: tuple[int, int, int], seed: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1], labelled with the model's own predictions (all correct)."""
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(dim=1)


def ctx(seed: int = 0, targets: torch.Tensor | None = None) -> AttackContext:
    return AttackContext(torch.Generator().manual_seed(seed), targets)


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def brute_force_map(model: nn.Module, x: torch.Tensor, y: torch.Tensor, value: float
                    ) -> torch.Tensor:
    """The scan written the slow, obvious way: one image, one pixel at a time."""
    n, _, h, w = x.shape
    out = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        for r in range(h):
            for c in range(w):
                candidate = x[i : i + 1].clone()
                candidate[:, :, r, c] = value
                out[i, r, c] = bool(predictions(model, candidate)[0] != y[i])
    return out
