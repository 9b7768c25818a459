"""BPDA chosen by the harness (issue #15 part 3): when a defense wraps its trained model,
gradient attacks also run with the unwrapped model's gradients (Athalye, Carlini & Wagner 2018),
graded by the wrapped classifier. Masked gradients then no longer pass for robustness."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from advbench import Defense
from advbench.conformance import ConformanceError, check_defense
from advbench.defense import bpda_surrogate
from advbench.oracle import Oracle

sys.path.insert(0, str(Path(__file__).parents[2] / "examples" / "bench-example-plugin"))
from bench_example_plugin import input_quantization
from support.bpda import FlippedQuantization, Negated

# A defense's own surrogate (issue #26 point 5) ---------------------------------------------------


def test_a_declared_surrogate_gives_its_gradient_the_closed_form():
    """On a linear model f(x) = Wx + b, with the loss Σ f_y(x): the gradient is exactly
    −W_y through the negated surrogate, +W_y through the default (the trained model), and zero
    through the quantized model itself; the values are always the quantized model's."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    defense = FlippedQuantization()
    wrapped = defense.wrap(linear)
    W = linear[1].weight.detach()
    expected = W[y].view(5, 1, 4, 4)

    def label_logits(logits, labels):
        return logits.gather(1, labels[:, None]).sum()

    for surrogate, sign in ((bpda_surrogate(defense, linear), -1),
                            (bpda_surrogate(input_quantization.InputQuantization(), linear), 1),
                            (None, 0)):
        oracle = Oracle(wrapped, "gradient", 5, surrogate=surrogate)
        grad, logits = oracle.gradient(x, y, loss=label_logits)
        assert torch.allclose(grad, sign * expected, atol=1e-6), sign
        assert torch.equal(logits, wrapped(x))


def test_a_surrogate_that_is_not_a_module_is_refused_by_the_kit():
    @dataclass(kw_only=True)
    class Broken(Defense):
        name = "broken-surrogate"

        def wrap(self, model):
            return Negated(model)

        def bpda_surrogate(self, model):
            return lambda x: model(x)

    with pytest.raises(ConformanceError, match="bpda-surrogate.*not an nn.Module"):
        check_defense(Broken)
    check_defense(FlippedQuantization)
