"""Helpers of tests/unit/test_oracle_eot.py and tests/e2e/test_oracle_eot_e2e.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advbench import Attack

MEAN = 0.75  # the noise's mean: uniform on [MEAN − 1, MEAN + 1]


DRAWS = 8


STEPS = 5


class NoisyLogits(nn.Module):
    """A deterministic model plus additive noise of known mean, drawn from its own generator."""

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        noise = MEAN + 2 * torch.rand(logits.shape, generator=self.generator) - 1
        return logits + noise.to(logits.device)


@dataclass(kw_only=True)
class Stepwise(Attack):
    """An L∞ iterative sign-gradient attack with a budget of exactly one query per step."""

    name = "stepwise"
    norms = ("linf",)
    access = "gradient"
    description = "sign-gradient steps, max_queries = steps"

    steps: int = STEPS

    @property
    def max_queries(self) -> int:
        return self.steps

    def run(self, oracle, x, y, threat, ctx):
        x_adv = x.clone()
        for _ in range(self.steps):
            grad, _ = oracle.gradient(x_adv, y)
            x_adv = (x + (x_adv + threat.eps / 2 * grad.sign() - x).clamp(-threat.eps,
                                                                          threat.eps)).clamp(0, 1)
        return x_adv
