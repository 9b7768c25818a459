"""Input quantization: every input rounded to ``levels`` grey levels before the model sees it.

Bit-depth reduction, one of the feature squeezers of Xu, Evans & Qi (NDSS 2018), used here as a
defense of its own. The model is trained on quantized inputs and the defended classifier
quantizes whatever it is given. Rounding has a zero derivative almost everywhere, so every input
gradient is exactly zero: gradient attacks learn nothing and the model *looks* robust. That is
gradient masking (Athalye, Carlini & Wagner 2018 break it with BPDA, using the identity as the
rounding's gradient); bench's sanity battery flags it (zero gradients, black-box attacks beating
white-box ones). A classic example of what a leaderboard must not take at face value.

Arguments:
    levels: grey levels per channel, at least 2 (8, i.e. 3 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from advbench import Defense, hookimpl
from torch import nn


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Round values in [0, 1] to the nearest of ``levels`` evenly spaced levels."""
    steps = levels - 1
    return torch.round(x * steps) / steps


class Quantized(nn.Module):
    """``model`` behind an input-quantization layer."""

    def __init__(self, model: nn.Module, levels: int) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(quantize(x, self.levels))


@dataclass(kw_only=True)
class InputQuantization(Defense):
    name = "input-quantization"
    description = "inputs rounded to `levels` grey levels (Xu et al. 2018); masks gradients"

    levels: int = 8

    def __post_init__(self) -> None:
        if self.levels < 2:
            raise ValueError("levels must be at least 2")

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      progress: float) -> torch.Tensor:
        return F.cross_entropy(model(quantize(x, self.levels)), y)

    def wrap(self, model: nn.Module) -> nn.Module:
        return Quantized(model, self.levels)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [InputQuantization]
