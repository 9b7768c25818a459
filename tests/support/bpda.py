"""Helpers of tests/e2e/test_bpda.py and tests/unit/test_bpda_unit.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from bench_example_plugin import input_quantization
from torch import nn


class Negated(nn.Module):
    """``−model(x)``: a surrogate whose every gradient is the opposite of the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.model(x)


@dataclass(kw_only=True)
class FlippedQuantization(input_quantization.InputQuantization):
    name = "flipped-quantization"
    description = "input quantization whose declared BPDA surrogate is the negated model"

    def bpda_surrogate(self, model: nn.Module) -> nn.Module:
        return Negated(model)
