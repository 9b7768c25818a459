"""Grading randomized defenses (issue #26, point 1): a prediction is a random variable, so the
harness grades the mean softmax over a stated number of draws, for clean and adversarial inputs
alike, and an input an attack returned unchanged keeps its clean prediction: the defense's own
noise is never counted as an attack's success, and ε = 0 equals clean accuracy, worst case
included."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbench import Defense, ThreatModel, hookimpl, load_registry, run_matrix
from advbench.reporting.leaderboard import to_markdown
from advbench.reporting.results import wilson_interval
from advbench.running.evaluate import CellSpec, attack_cell, decide, predict, prediction_draws
from advbench_plugins.fgsm import FGSM
from advbench_plugins.pgd_linf import PGDLinf
from advbench_plugins.random_search import RandomSearch

CPU = torch.device("cpu")


class NoisyLogits(nn.Module):
    """A classifier whose prediction is random: its logits plus Gaussian noise of ``scale``."""

    def __init__(self, base: nn.Module, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        return logits + self.scale * torch.randn_like(logits)


class OwnVote(nn.Module):
    """A randomized model that decides for itself (as smoothing does), counting its calls."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base, self.calls = base, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + torch.randn(len(x), 10)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.base(x).argmax(dim=1)


class AlwaysDropout(nn.Module):
    """Dropout on the input, kept on at inference (``F.dropout`` with ``training=True``)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


@dataclass(kw_only=True)
class DropoutAtTest(Defense):
    """A third party's randomized defense: input dropout in training, kept on at test time."""

    name = "dropout-at-test"
    randomized = True
    p: float = field(default=0.5)

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      progress: float) -> torch.Tensor:
        assert self.context is not None
        keep = torch.rand(x.shape, generator=self.context.generator, device=x.device) >= self.p
        return F.cross_entropy(model(x * keep / (1 - self.p)), y)

    def wrap(self, model: nn.Module) -> nn.Module:
        return nn.Sequential(AlwaysDropout(self.p), model)


class DropoutPlugin:
    @hookimpl
    def bench_defenses(self):
        return [DropoutAtTest]


def test_the_mean_of_draws_steadies_a_random_prediction(trained_cnn, fashion):
    """Two gradings of the same inputs agree more often with 32 draws than with one."""
    model = NoisyLogits(trained_cnn, 4.0)
    x = fashion["test"].x[:300]
    agree = {}
    for draws in (1, 32):
        torch.manual_seed(0)
        first, second = (predict(model, x, 100, CPU, draws) for _ in range(2))
        agree[draws] = float((first == second).float().mean())
    assert agree[1] < 0.9 and agree[32] > agree[1] + 0.05
    assert prediction_draws(model, 32) == 32 and prediction_draws(trained_cnn, 1) == 1


def test_a_model_with_its_own_predict_is_asked_once(trained_cnn, fashion):
    """Smoothing's PREDICT is already a vote (with abstention): never voted over again."""
    model = OwnVote(trained_cnn)
    x = fashion["test"].x[:50]
    labels = decide(model, x, draws=8)
    assert model.calls == 1 and torch.equal(labels, trained_cnn(x).argmax(dim=1))
    assert prediction_draws(model, 8) == 1


@pytest.mark.parametrize("draws", [1, 8])
def test_eps_zero_equals_clean_for_a_random_prediction(trained_cnn, fashion, draws):
    """A defense whose prediction is random: at ε = 0 every cell, and the per-sample union
    of them (the worst case), leave exactly the clean accuracy."""
    model = NoisyLogits(trained_cnn, 3.0).eval()
    data = fashion["test"].subset(torch.arange(120))
    torch.manual_seed(1)
    clean = predict(model, data.x, 60, CPU, draws)
    threat = ThreatModel("linf", 0.0)
    robust = []
    for attack in (FGSM(), PGDLinf(steps=3), RandomSearch(max_queries=20)):
        outcome = attack_cell(model, attack, data, clean, threat,
                              CellSpec(batch_size=60, device=CPU, seed=0, eot_samples=draws))
        assert torch.equal(outcome.robust, outcome.clean_correct), attack.name
        robust.append(outcome.robust)
    assert torch.equal(torch.stack(robust).all(dim=0), clean == data.y)


def test_changed_inputs_are_graded_by_the_mean_of_draws(trained_cnn, fashion):
    """Inputs an attack changed are predicted again, with the stated draws: an attack that
    adds noise of size ε is graded as a fresh 16-draw prediction of the noisy input."""
    model = NoisyLogits(trained_cnn, 3.0).eval()
    data = fashion["test"].subset(torch.arange(100))
    torch.manual_seed(2)
    clean = predict(model, data.x, 100, CPU, 16)
    outcome = attack_cell(model, FGSM(), data, clean, ThreatModel("linf", 0.3),
                          CellSpec(batch_size=100, device=CPU, seed=0, eot_samples=16))
    assert (outcome.adv_pred != clean).any()  # graded again, not kept


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    """dropout-at-test at the smoke preset, n = 100, three attacks at ε = 0 and 0.1."""
    root = tmp_path_factory.mktemp("dropout")
    registry = load_registry(extra=[DropoutPlugin()])
    frame = run_matrix(attacks="fgsm,pgd-linf,random-search", defenses="dropout-at-test",
                       registry=registry, preset="smoke", n_train=3000, n_eval=100,
                       eps={"linf": [0.0, 0.1]}, out=root / "out", cache_dir=root / "cache")
    return frame, root / "out"


def test_dropout_at_test_worst_case_at_eps_zero_is_clean_accuracy(dropout_run):
    frame, _ = dropout_run
    zero = frame[frame["eps"] == 0].set_index("attack")
    worst, singles = zero.loc["worst-case"], zero.drop(index="worst-case")
    n = int(worst["n_samples"])
    best = singles["robust_accuracy"].min()  # the best single attack: the lowest it left
    low, high = wilson_interval(round(best * n), n)
    assert low <= worst["robust_accuracy"] <= high
    assert worst["robust_accuracy"] == worst["clean_accuracy"]
    assert (singles["robust_accuracy"] == singles["clean_accuracy"]).all()
    assert not frame["flags"].str.contains("ε=0 differs").any()
    assert (frame["eot_samples"] == 8).all() and (frame["prediction_draws"] == 8).all()
    # the clean accuracy is one graded number, the same in every row
    assert frame["clean_accuracy"].nunique() == 1


def test_the_draws_are_in_the_leaderboard_note(dropout_run):
    frame, _ = dropout_run
    text = to_markdown(frame)
    assert "mean softmax of 8 draws" in text
