"""BPDA chosen by the harness (issue #15 part 3): when a defense wraps its trained model,
gradient attacks also run with the unwrapped model's gradients (Athalye, Carlini & Wagner 2018),
graded by the wrapped classifier. Masked gradients then no longer pass for robustness."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import Scaled
from torch import nn

from advbench import Defense, hookimpl, load_registry, run_matrix
from advbench.oracle import Oracle

sys.path.insert(0, str(Path(__file__).parents[2] / "examples" / "bench-example-plugin"))
from bench_example_plugin import input_quantization
from support.bpda import FlippedQuantization

SCALE = 1e4


@dataclass(kw_only=True)
class LogitScaling(Defense):
    name = "logit-scaling"
    description = "logits multiplied by 1e4 at inference (masks cross-entropy gradients)"

    def wrap(self, model: nn.Module) -> nn.Module:
        return ScaledLogits(model)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [LogitScaling]


class ScaledLogits(nn.Module):
    """``model``'s logits times a large constant: softmax saturates, cross-entropy gradients
    vanish, and the predictions are exactly the model's."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SCALE * self.model(x)


def test_surrogate_gives_its_gradient_and_the_models_values(trained_cnn, batch):
    """Closed form: for 1e4·f, the BPDA gradient is exactly the plain gradient of f, while the
    logits returned (and the single query charged) are the wrapped model's."""
    x, y = batch[0][:32], batch[1][:32]
    wrapped = Scaled(trained_cnn, SCALE).eval()
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


# A defense's own surrogate (issue #26 point 5) ---------------------------------------------------


class NoisyLogits(nn.Module):
    """Logits plus Gaussian noise from the module's own generator: randomized, but with
    gradients (so the harness would not use BPDA on it unless the defense asks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.generator = model, torch.Generator().manual_seed(0)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits + torch.randn(logits.shape, generator=self.generator).to(logits.device)


@dataclass(kw_only=True)
class NoisyWithSurrogate(Defense):
    name = "noisy-with-surrogate"
    randomized = True
    description = "noisy logits; its BPDA surrogate is the trained model"

    def wrap(self, model: nn.Module) -> nn.Module:
        return NoisyLogits(model)

    def bpda_surrogate(self, model: nn.Module) -> nn.Module:
        return model


class SurrogatePlugins:
    @hookimpl
    def bench_defenses(self) -> list[type[Defense]]:
        return [FlippedQuantization, NoisyWithSurrogate]


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    registry = load_registry(extra=[input_quantization, SurrogatePlugins()])
    frame = run_matrix(attacks="fgsm", registry=registry, preset="smoke", n_train=4000,
                       n_eval=60, defenses="input-quantization,flipped-quantization,"
                       "noisy-with-surrogate", eps={"linf": [0.1]},
                       cache_dir=tmp_path_factory.mktemp("surrogate-cache"))
    return frame.set_index(["defense", "attack"])


@pytest.mark.slow
def test_the_harness_differentiates_the_declared_surrogate(declared):
    """The same quantized defense, BPDA through the identity and through a negated surrogate:
    FGSM along the negated model's gradient walks toward the label and fools (almost) nothing,
    along the identity's it fools many; predictions are the quantized model's in both."""
    identity = declared.loc[("input-quantization", "fgsm")]
    flipped = declared.loc[("flipped-quantization", "fgsm")]
    assert identity["adaptive"] == flipped["adaptive"] == "bpda"
    # A big step toward the label still crosses a little-trained model's boundary here and
    # there (4 of 23 samples on one machine, 1 on another): "few" is a third of the identity's.
    fooled = {name: row["clean_accuracy"] - row["robust_accuracy"]
              for name, row in (("identity", identity), ("flipped", flipped))}
    assert fooled["flipped"] <= fooled["identity"] / 3
    assert identity["robust_accuracy"] < flipped["robust_accuracy"] - 0.2
    assert declared.loc[("noisy-with-surrogate", "fgsm"), "adaptive"] == "eot+bpda"
