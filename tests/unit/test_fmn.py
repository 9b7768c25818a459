"""FMN (fmn-linf, fmn-l2, fmn-l1, fmn-l0): the exact minimal norm on linear models (closed
form; in L1 and L0 inside the box), the gate and the ε-gating of the returned examples,
queries and early exit, targets, the annealing, the conformance kit and a smoke cell of the
matrix."""

from __future__ import annotations

import pytest
import torch
from support.min_norm import attack_once
from test_fab import linear_world
from torch import nn

from advbench import Oracle, ThreatModel, load_registry
from advbench.algorithms.apgd import top_classes
from advbench.algorithms.fmn import _margin, cosine, pixels_to_boundary
from advbench.conformance import check_attack

NAMES = {"linf": "fmn-linf", "l2": "fmn-l2", "l1": "fmn-l1", "l0": "fmn-l0"}


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


def l1_distance_in_box(model, x, y):
    """Each point's exact smallest L1 perturbation to another class of the linear model, the
    box [0, 1] included: per wrong class a fractional knapsack, filled greedily (optimal) with
    the coordinates of largest weight gap first, each moved as far as the box lets it."""
    z, weight = model(x), model[1].weight
    gap = z.gather(1, y.view(-1, 1)) - z  # n × classes
    w = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # n × classes × inputs
    room = torch.where(w > 0, x.flatten(1).unsqueeze(1), 1 - x.flatten(1).unsqueeze(1))
    order = w.abs().argsort(dim=2, descending=True)
    size, room = w.abs().gather(2, order), room.gather(2, order)
    gain = (size * room).cumsum(dim=2)
    last = (gain < gap.unsqueeze(2)).sum(dim=2, keepdim=True)  # the coordinate that completes
    fits = last.squeeze(2) < size.shape[2]
    last = last.clamp(max=size.shape[2] - 1)
    before_gain = gain.gather(2, last) - (size * room).gather(2, last)
    before_cost = room.cumsum(dim=2).gather(2, last) - room.gather(2, last)
    cost = (before_cost + (gap.unsqueeze(2) - before_gain) / size.gather(2, last)).squeeze(2)
    cost = torch.where(fits, cost, torch.inf)
    cost[torch.arange(len(x)), y] = torch.inf
    return cost.min(dim=1).values


def test_fmn_l1_finds_the_linear_models_minimal_norm_inside_the_box(attacks):
    """In L1 the box matters: the cheapest change piles onto the coordinates of largest weight,
    which run into 0 or 1 (38 of the 40 points need more than the unboxed distance). FMN-L1
    closes in on the boxed minimum: within 0.5 % after 100 steps, never below."""
    model, x, y, _ = linear_world()
    exact = l1_distance_in_box(model, x, y)
    weight, z = model[1].weight, model(x)
    unboxed = ((z.gather(1, y.view(-1, 1)) - z) / (weight[y].unsqueeze(1) - weight).abs()
               .amax(dim=2)).scatter(1, y.view(-1, 1), torch.inf).min(dim=1).values
    assert (exact > unboxed * 1.001).sum() >= 30
    result, needed, oracle = attack_once(attacks["l1"], model, x, y, ThreatModel("l1", 0.0),
                                         early_exit=False)
    ratio = needed / exact
    assert (ratio >= 1 - 1e-4).all(), ratio.min()
    assert (ratio <= 1.005).all(), ratio.max()
    assert (oracle.queries == 100).all()


def test_fmn_l1_examples_are_gated_at_eps(attacks):
    """At ε the median of the minimal norms, the half of the points whose minimum lies within ε
    come back adversarial and inside the L1 ball; the others projected onto it, not fooled."""
    model, x, y, _ = linear_world()
    eps = float(l1_distance_in_box(model, x, y).median())
    result, needed, _ = attack_once(attacks["l1"], model, x, y, ThreatModel("l1", eps))
    assert result.x_adv is not None, result.reason
    size = (result.x_adv - x).abs().flatten(1).sum(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all()
    fooled = model(result.x_adv).argmax(dim=1) != y
    assert torch.equal(fooled, needed <= eps)
    assert 15 <= int(fooled.sum()) <= 25


def confident_linear_world(n: int = 40, seed: int = 0):
    """Two classes of a linear model on 8×8 images, every point pushed 0.22 to 0.45 from the
    boundary's centre along the sign of the weight gap: no pixel or two can flip it, a dozen
    can."""
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 64, generator=generator))
        layer.bias.copy_(-0.5 * layer.weight.sum(dim=1))
    model = nn.Sequential(nn.Flatten(), layer).eval().requires_grad_(False)
    gap_sign = (layer.weight[1] - layer.weight[0]).sign().view(1, 1, 8, 8)
    y = torch.randint(0, 2, (n,), generator=generator)
    side = torch.where(y == 1, 1.0, -1.0).view(-1, 1, 1, 1)
    x = 0.5 + 0.45 * side * gap_sign * (0.5 + 0.5 * torch.rand(n, 1, 8, 8, generator=generator))
    return model, x, y


def l0_distance_in_box(model, x, y):
    """Each point's exact fewest changed pixels to another class of the linear model (one
    channel): the pixels of largest possible logit change (weight gap × room in the box),
    taken until their sum covers the gap."""
    z, weight = model(x), model[1].weight
    gap = z.gather(1, y.view(-1, 1)) - z
    w = weight[y].unsqueeze(1) - weight.unsqueeze(0)
    room = torch.where(w > 0, x.flatten(1).unsqueeze(1), 1 - x.flatten(1).unsqueeze(1))
    reach = (w.abs() * room).sort(dim=2, descending=True).values.cumsum(dim=2)
    count = (reach < gap.unsqueeze(2)).sum(dim=2).float() + 1
    count = torch.where(count > w.shape[2], torch.inf, count)
    count[torch.arange(len(x)), y] = torch.inf
    return count.min(dim=1).values


def test_fmn_l0_finds_the_fewest_pixels_on_a_linear_model(attacks):
    """FMN-L0's budget counts pixels; on the confident linear model (12 or 13 pixels needed)
    it finds the exact fewest for most points in 100 steps, one more for the rest, and never
    reports fewer than exist."""
    model, x, y = confident_linear_world()
    assert torch.equal(model(x).argmax(dim=1), y)
    exact = l0_distance_in_box(model, x, y)
    assert (exact >= 12).all()
    result, needed, oracle = attack_once(attacks["l0"], model, x, y, ThreatModel("l0", 0.0),
                                         early_exit=False)
    assert (needed >= exact).all()
    assert (needed <= exact + 1).all()
    assert int((needed == exact).sum()) >= 25
    assert (oracle.queries == 100).all()


def test_the_linearized_pixel_count_is_exact_on_a_linear_model():
    """From the clean point FMN-L0 aims its first budget at the linearized count: on a linear
    model of two classes it is the exact fewest pixels."""
    model, x, y = confident_linear_world()
    grad, logits = Oracle(model, "gradient", len(x)).gradient(
        x, y, loss=lambda z, c: _margin(z, c, False).sum())
    count = pixels_to_boundary(grad, x, torch.zeros_like(x), _margin(logits, y, False))
    assert torch.equal(count, l0_distance_in_box(model, x, y))


def test_fmn_l0_examples_change_at_most_eps_pixels(attacks):
    """At ε = 13 pixels the examples come back with at most 13 changed pixels, fooled wherever
    FMN-L0's count is within ε (elsewhere the 13 most-changed pixels of its example may
    fool too)."""
    model, x, y = confident_linear_world()
    result, needed, _ = attack_once(attacks["l0"], model, x, y, ThreatModel("l0", 13.0))
    assert result.x_adv is not None, result.reason
    assert ((result.x_adv != x).flatten(1).sum(dim=1) <= 13).all()
    fooled = model(result.x_adv).argmax(dim=1) != y
    assert fooled[needed <= 13].all()
    assert int((needed <= 13).sum()) >= 25


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


@pytest.mark.parametrize("norm", ["linf", "l2", "l1", "l0"])
def test_conformance(attacks, norm):
    check_attack(attacks[norm], params={"iterations": 5})
