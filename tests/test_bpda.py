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

from advbench import Defense, hookimpl, load_registry, run_matrix
from advbench.oracle import Oracle

sys.path.insert(0, str(Path(__file__).parents[1] / "examples" / "bench-example-plugin"))
from bench_example_plugin import input_quantization  # noqa: E402

SCALE = 1e4


class ScaledLogits(nn.Module):
    """``model``'s logits times a large constant: softmax saturates, cross-entropy gradients
    vanish, and the predictions are exactly the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SCALE * self.model(x)


@dataclass(kw_only=True)
class LogitScaling(Defense):
    name = "logit-scaling"
    description = "logits multiplied by 1e4 at inference (masks cross-entropy gradients)"

    def wrap(self, model: nn.Module) -> nn.Module:
        return ScaledLogits(model)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [LogitScaling]


def test_surrogate_gives_its_gradient_and_the_models_values(trained_cnn, batch):
    """Closed form: for 1e4·f, the BPDA gradient is exactly the plain gradient of f, while the
    logits returned (and the single query charged) are the wrapped model's."""
    x, y = batch[0][:32], batch[1][:32]
    wrapped = ScaledLogits(trained_cnn).eval()
    oracle = Oracle(wrapped, "gradient", len(y), surrogate=trained_cnn)
    grad, logits = oracle.gradient(x, y)
    expected, _ = Oracle(trained_cnn, "gradient", len(y)).gradient(x, y)
    assert torch.equal(grad, expected)
    assert torch.allclose(logits, wrapped(x))
    assert oracle.queries.tolist() == [1] * len(y)
    x = x.clone().requires_grad_(True)
    straight = oracle.logits(x)  # the wrapped model's values, the surrogate's gradient
    assert torch.allclose(straight, wrapped(x))
    (through,) = torch.autograd.grad(straight[:, 0].sum(), x)
    (direct,) = torch.autograd.grad(trained_cnn(x)[:, 0].sum(), x)
    assert torch.allclose(through, direct)
    assert oracle.queries.tolist() == [2] * len(y)


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """none, logit-scaling and input-quantization (the example's 8 levels) under gradient
    attacks."""
    registry = load_registry(extra=[sys.modules[__name__], input_quantization])
    frame = run_matrix(attacks="fgsm,pgd-linf", defenses="none,logit-scaling,input-quantization",
                       registry=registry, preset="smoke", n_train=3000, n_eval=100,
                       eps={"linf": [0.1]}, cache_dir=tmp_path_factory.mktemp("bpda-cache"))
    return frame.set_index(["defense", "attack"])


@pytest.mark.slow
def test_wrappers_get_bpda_and_lose_their_masked_robustness(masked):
    none = masked.loc[("none", "worst-case"), "robust_accuracy"]
    for defense in ("logit-scaling", "input-quantization"):
        rows = masked.loc[defense]
        assert set(rows["adaptive"]) == {"bpda"}, defense
        assert rows.loc["worst-case", "robust_accuracy"] <= none + 0.05, defense
        assert "BPDA" in rows.loc["worst-case", "flags"]
    assert set(masked.loc["none", "adaptive"]) == {""}


@pytest.mark.slow
def test_masking_flags_stay_visible(masked):
    flags = masked.loc[("input-quantization", "fgsm"), "flags"]
    assert "input gradients are zero" in flags
