"""What a query is against a randomized defense (issue #26 point 2): one request of the attack.

``oracle.logits`` is the mean of the logits over the run's ``eot_samples`` draws (differentiable,
so a loss of the attack's own gets the EOT gradient), ``oracle.gradient`` is the gradient of the
loss of that mean, and either call charges one query per row however many draws stand behind it:
a gradient attack with a budget of one query per step gets all its steps.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
import torch
from support.oracle_eot import DRAWS, MEAN, STEPS, NoisyLogits, Stepwise
from torch import nn

from advbench import Attack, Defense, Split, ThreatModel, hookimpl, load_registry, run_matrix
from advbench.conformance import tiny_images, tiny_model
from advbench.oracle import Oracle
from advbench.running.evaluate import CellSpec, attack_cell, predict


@pytest.fixture
def noisy() -> tuple[NoisyLogits, torch.Tensor, torch.Tensor]:
    base = tiny_model()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    x = tiny_images(6)
    return NoisyLogits(base).eval(), x, base(x).argmax(dim=1)


@dataclass(kw_only=True)
class NoisyDefense(Defense):
    name = "noisy-logits"
    randomized = True
    description = "logits plus uniform noise of mean 0.75 (a randomized defense for tests)"

    def wrap(self, model: nn.Module) -> nn.Module:
        return NoisyLogits(model)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [NoisyDefense]


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [Stepwise]


def test_logits_converge_to_the_models_plus_the_noise_mean(noisy):
    """Noise uniform on [MEAN − 1, MEAN + 1]: the mean of 4000 draws is within 0.1 of
    f(x) + MEAN (Hoeffding: off by more with probability below 1e-4 per entry)."""
    model, x, _ = noisy
    oracle = Oracle(model, "gradient", len(x), eot_samples=4000)
    with torch.no_grad():
        gap = oracle.logits(x) - (model.model(x) + MEAN)
    assert float(gap.abs().max()) < 0.1
    assert oracle.queries.tolist() == [1] * len(x)


def test_a_budget_of_one_query_per_step_gets_every_step_under_the_seal(noisy):
    """Under the seal, eight draws per query are neither queries nor passes outside it."""
    model, x, _ = noisy
    model.reseed(0)
    clean = predict(model, x, 16, torch.device("cpu"))
    data = Split(x, clean.clone())
    outcome = attack_cell(model, Stepwise(), data, clean, ThreatModel("linf", 0.1),
                          CellSpec(batch_size=16, device=torch.device("cpu"), seed=0,
                          eot_samples=DRAWS))
    assert outcome.invalid_reason is None
    assert outcome.queries.tolist() == [STEPS] * len(x)


@pytest.fixture(scope="module")
def eot_run(tmp_path_factory):
    registry = load_registry(extra=[sys.modules[__name__]])
    frame = run_matrix(attacks="stepwise,fgsm", defenses="noisy-logits", registry=registry,
                       preset="smoke", n_train=1000, n_eval=40, eps={"linf": [0.1]},
                       batch_size=16, cache_dir=tmp_path_factory.mktemp("eot-cache"))
    return frame[frame["attack"] != ""].set_index("attack")


def test_a_run_against_a_randomized_defense_gives_a_budgeted_attack_every_step(eot_run):
    row = eot_run.loc["stepwise"]
    assert row["status"] == "ok", row["invalid_reason"]
    assert row["eot_samples"] == DRAWS and row["adaptive"] == "eot"
    assert row["queries_mean"] == STEPS and row["query_budget"] == STEPS
    assert eot_run.loc["fgsm", "queries_mean"] == 1
