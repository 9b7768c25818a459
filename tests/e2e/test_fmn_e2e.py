"""FMN (fmn-linf, fmn-l2): the exact minimal norm on linear models (closed form), the gate and
the ε-gating of the returned examples, queries and early exit, targets, the annealing, the
conformance kit and a smoke cell of the matrix."""

from __future__ import annotations

import pytest
import torch
from support.min_norm import attack_once

from advbench import ThreatModel, load_registry, run_matrix
from advbench.threat import perturbation_size

NAMES = {"linf": "fmn-linf", "l2": "fmn-l2"}


@pytest.fixture(scope="module")
def attacks():
    registry = load_registry()
    return {norm: registry.get("attack", name).cls for norm, name in NAMES.items()}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_returned_examples_are_gated_at_eps(attacks, tiny, norm):
    """Inside the ε-ball and the box; a sample whose smallest norm is within ε comes back
    adversarial; without early exit the norms do not depend on ε, so the broken samples grow
    with ε."""
    model, x, y = tiny
    broken_before, norms_seen = torch.zeros(len(x), dtype=torch.bool), None
    scale = {"linf": 0.02, "l2": 0.3}[norm]
    for eps in (0.0, scale, 2 * scale, 4 * scale, 100.0):
        result, needed, _ = attack_once(attacks[norm], model, x, y, ThreatModel(norm, eps),
                                        iterations=30, early_exit=False)
        assert result.reason is None, result.reason
        assert (result.x_adv >= 0).all() and (result.x_adv <= 1).all()
        assert (perturbation_size(result.x_adv - x, norm) <= eps + 1e-6).all()
        assert (model(result.x_adv).argmax(dim=1) != y)[needed <= eps].all()
        if norms_seen is not None:
            assert torch.equal(needed, norms_seen)
        norms_seen, broken = needed, needed <= eps
        assert (broken | ~broken_before).all()
        broken_before = broken
    assert broken_before.all()


def test_early_exit_saves_queries_and_keeps_the_broken_samples(attacks, tiny):
    model, x, y = tiny
    _, full_norms, _ = attack_once(attacks["l2"], model, x, y, ThreatModel("l2", 0.0),
                                   iterations=30, early_exit=False)
    eps = float(full_norms.sort().values[2:4].mean())
    _, quick_norms, oracle = attack_once(attacks["l2"], model, x, y, ThreatModel("l2", eps),
                                         iterations=30)
    broken = full_norms <= eps
    assert int(broken.sum()) == 3
    assert torch.equal(quick_norms <= eps, broken)
    assert (oracle.queries[broken] < 30).all() and (oracle.queries[~broken] == 30).all()


def test_smoke_cell_is_valid_and_reports_median_norm(tmp_path):
    frame = run_matrix(attacks="fmn-linf,fmn-l2", defenses="none", preset="smoke",
                       n_train=2000, n_eval=20, out=tmp_path / "out",
                       cache_dir=tmp_path / "cache")
    rows = frame[frame["attack"].isin(["fmn-linf", "fmn-l2"])]
    assert len(rows) == 2
    assert rows["valid"].all()
    assert (rows["median_norm"] > 0).all()
    assert (rows["robust_accuracy"] <= rows["clean_accuracy"]).all()
