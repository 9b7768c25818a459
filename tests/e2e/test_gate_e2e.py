"""The validity gate catches every way an attack can cheat; the harness grades, not the plugin."""

from __future__ import annotations

import pytest
import sample_plugins
import torch

from advbench import AttackContext, Oracle, ThreatModel
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench.threat import perturbation_size

EXPECTED_REASON = {
    "too-far": "exceeds eps",
    "returns-nan": "non-finite",
    "wrong-shape": "wrong shape",
    "wrong-dtype": "wrong dtype",
    "wrong-device": "wrong device",
    "not-a-tensor": "not a torch.Tensor",
}


@pytest.mark.parametrize("cheater", sample_plugins.CHEATERS, ids=lambda c: c.name)
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_every_cheater_is_caught(cheater, norm, eps, trained_cnn, batch):
    x, y = batch
    pred = predict(trained_cnn, x, 250, torch.device("cpu"))
    outcome = attack_cell(trained_cnn, cheater(), _split(x, y), pred, ThreatModel(norm, eps),
                          CellSpec(batch_size=250, device=torch.device("cpu"), seed=0))
    assert outcome.invalid_reason is not None
    assert EXPECTED_REASON[cheater.name] in outcome.invalid_reason


def test_out_of_box_is_clipped_and_counted(trained_cnn, batch):
    x, y = batch
    threat = ThreatModel("linf", 0.1)
    oracle = Oracle(trained_cnn, "gradient", len(x))
    result = sample_plugins.OutOfBox().perturb(oracle, x, y, threat, _ctx())
    assert result.reason is None
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert float(perturbation_size(result.x_adv - x, "linf").max()) <= 0.1 + 1e-6


def test_attack_cannot_modify_the_callers_inputs(trained_cnn, batch):
    x, y = batch
    before = x.clone()
    oracle = Oracle(trained_cnn, "gradient", len(x))
    sample_plugins.ModifiesInput().perturb(oracle, x, y, ThreatModel("linf", 1.0), _ctx())
    assert torch.equal(x, before)


def _split(x, y):
    from advbench import Split

    return Split(x, y)


def _ctx():
    return AttackContext(torch.Generator().manual_seed(0))
