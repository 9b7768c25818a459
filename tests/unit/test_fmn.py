"""FMN (fmn-linf, fmn-l2): the exact minimal norm on linear models (closed form), the gate and
the ε-gating of the returned examples, queries and early exit, targets, the annealing, the
conformance kit and a smoke cell of the matrix."""

from __future__ import annotations

import pytest
import torch
from support.min_norm import attack_once
from test_fab import linear_world

from advbench import ThreatModel, load_registry
from advbench.algorithms.apgd import top_classes
from advbench.algorithms.fmn import cosine
from advbench.conformance import check_attack

NAMES = {"linf": "fmn-linf", "l2": "fmn-l2"}


@pytest.fixture(scope="module")
def attacks():
    registry = load_registry()
    return {norm: registry.get("attack", name).cls for norm, name in NAMES.items()}


def test_cosine_annealing_runs_from_start_to_end():
    assert cosine(1.0, 0.01, 0, 10) == 1.0
    assert cosine(1.0, 0.01, 10, 10) == pytest.approx(0.01)
    assert cosine(1.0, 0.01, 5, 10) == pytest.approx(0.505)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fmn_finds_the_linear_models_minimal_norm(attacks, norm):
    """On a linear model FMN's first budget is the exact distance to the nearest boundary,
    and its shrinking budget closes in on it: within 0.2 % after 100 steps, never below."""
    model, x, y, distances = linear_world()
    _, needed, oracle = attack_once(attacks[norm], model, x, y, ThreatModel(norm, 0.0),
                                    early_exit=False)
    ratio = needed / distances[norm]
    assert (ratio >= 1 - 1e-4).all(), ratio.min()
    assert (ratio <= 1.002).all(), ratio.max()
    assert (oracle.queries == 100).all()  # one gradient query per iteration


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targets_are_reached(attacks, norm):
    model, x, y, distances = linear_world()
    targets = (y + 1) % 5
    result, needed, _ = attack_once(attacks[norm], model, x, y, ThreatModel(norm, 10.0),
                                    targets=targets, iterations=50, early_exit=False)
    assert needed.isfinite().all()
    assert (needed >= distances[norm] * (1 - 1e-4)).all()
    assert torch.equal(model(result.x_adv).argmax(dim=1), targets)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_round_per_wrong_class_finds_the_minimal_norm(attacks, norm):
    """Rounds towards all 4 wrong classes of the linear model find the exact minimal norm (the
    nearest boundary is one of them), for one clean-logits query and 100 steps a round."""
    model, x, y, distances = linear_world()
    _, needed, oracle = attack_once(attacks[norm], model, x, y, ThreatModel(norm, 0.0),
                                    target_classes=4, early_exit=False)
    ratio = needed / distances[norm]
    assert (ratio >= 1 - 1e-4).all(), ratio.min()
    assert (ratio <= 1.002).all(), ratio.max()
    assert (oracle.queries == 1 + 4 * 100).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_round_reaches_the_most_likely_wrong_class(attacks, norm):
    """A single round steers towards the wrong class the clean input scores highest: its norm
    is the distance to that class's boundary, farther than the nearest one for some points."""
    model, x, y, distances = linear_world(classes=10, seed=1)
    z, weight = model(x), model[1].weight
    top = top_classes(z, y, 1)[:, 0]
    rows = torch.arange(len(x))
    dual = 1 if norm == "linf" else 2
    to_top = (z[rows, y] - z[rows, top]) / torch.linalg.vector_norm(
        weight[y] - weight[top], ord=dual, dim=1)
    _, needed, _ = attack_once(attacks[norm], model, x, y, ThreatModel(norm, 0.0),
                               target_classes=1, early_exit=False)
    assert (to_top > distances[norm] * 1.01).sum() >= 10
    ratio = needed / to_top
    assert (ratio >= 1 - 1e-4).all(), ratio.min()
    assert (ratio <= 1.002).all(), ratio.max()


def test_bad_settings_are_refused(attacks):
    with pytest.raises(ValueError, match="iterations"):
        attacks["l2"](iterations=0)
    with pytest.raises(ValueError, match="gamma"):
        attacks["linf"](gamma=1.5)
    with pytest.raises(ValueError, match="target_classes"):
        attacks["l2"](target_classes=-1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_conformance(attacks, norm):
    check_attack(attacks[norm], params={"iterations": 5})
