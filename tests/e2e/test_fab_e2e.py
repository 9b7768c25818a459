"""FAB (fab-linf, fab-l2, fab-t): the box-constrained projection against an independent solver,
the exact minimal norm on linear models (closed form), the gate and the ε-gating of the
returned examples, queries, targets, the conformance kit and a smoke cell of the matrix."""

from __future__ import annotations

import pytest
import torch
from support.min_norm import attack_once

from advbench import ThreatModel, load_registry, run_matrix
from advbench.conformance import check_attack
from advbench.threat import perturbation_size

NAMES = {"linf": "fab-linf", "l2": "fab-l2"}


@pytest.fixture(scope="module")
def attacks():
    registry = load_registry()
    return {name: registry.get("attack", name).cls for name in ("fab-linf", "fab-l2", "fab-t")}


# ---------------------------------------------------------------- the projection


# ---------------------------------------------------------------- minimal norms


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_returned_examples_are_gated_at_eps(attacks, tiny, norm):
    """Inside the ε-ball and the box (the gate accepts every cell); a sample whose smallest
    norm is within ε comes back adversarial, and with no early exit the norms do not depend on
    ε, so the samples broken at ε grow with ε."""
    model, x, y = tiny
    broken_before = torch.zeros(len(x), dtype=torch.bool)
    norms_seen = None
    scale = {"linf": 0.02, "l2": 0.3}[norm]
    for eps in (0.0, scale, 2 * scale, 4 * scale, 100.0):
        for name in (NAMES[norm], "fab-t"):
            result, needed, _ = attack_once(attacks[name], model, x, y, ThreatModel(norm, eps),
                                            iterations=10, early_exit=False)
            assert result.reason is None, result.reason
            x_adv = result.x_adv
            assert (x_adv >= 0).all() and (x_adv <= 1).all()
            assert (perturbation_size(x_adv - x, norm) <= eps + 1e-6).all()
            fooled = model(x_adv).argmax(dim=1) != y
            assert (fooled[needed <= eps]).all()
            if name == NAMES[norm]:
                if norms_seen is not None:
                    assert torch.equal(needed, norms_seen)
                norms_seen = needed
                broken = needed <= eps
                assert (broken | ~broken_before).all()
                broken_before = broken
    assert broken_before.all()  # at ε = 100 FAB breaks all six


def test_early_exit_saves_queries_and_keeps_the_broken_samples(attacks, tiny):
    model, x, y = tiny
    _, full_norms, full_oracle = attack_once(attacks["fab-l2"], model, x, y,
                                             ThreatModel("l2", 0.0), iterations=10,
                                             early_exit=False)
    assert (full_oracle.queries == 20).all()  # a gradient and a label query per iteration
    eps = float(full_norms.sort().values[2:4].mean())  # three samples within, three beyond
    _, quick_norms, quick_oracle = attack_once(attacks["fab-l2"], model, x, y,
                                               ThreatModel("l2", eps), iterations=10)
    broken = full_norms <= eps
    assert int(broken.sum()) == 3
    assert torch.equal(quick_norms <= eps, broken)
    assert (quick_norms >= full_norms).all()
    assert (quick_oracle.queries[broken] < 20).all()
    assert (quick_oracle.queries[~broken] == 20).all()


def test_fab_t_queries(attacks, tiny):
    """One query for the clean logits, then per round and iteration a gradient and a label."""
    model, x, y = tiny
    _, _, oracle = attack_once(attacks["fab-t"], model, x, y, ThreatModel("linf", 0.0),
                               iterations=4, target_classes=3, early_exit=False)
    assert (oracle.queries == 1 + 3 * 4 * 2).all()


@pytest.mark.parametrize("name", ["fab-linf", "fab-l2", "fab-t"])
def test_conformance(attacks, name):
    params = {"iterations": 5} if name != "fab-t" else {"iterations": 5, "target_classes": 2}
    check_attack(attacks[name], params=params)


def test_smoke_cell_is_valid_and_reports_median_norm(tmp_path):
    frame = run_matrix(attacks="fab-t,fab-l2", defenses="none", preset="smoke", n_train=2000,
                       n_eval=20, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    rows = frame[frame["attack"].isin(["fab-t", "fab-l2"])]
    assert len(rows) == 3  # fab-t at L∞ and L2, fab-l2 at L2
    assert rows["valid"].all()
    assert (rows["median_norm"] > 0).all()
    assert (rows["robust_accuracy"] <= rows["clean_accuracy"]).all()
