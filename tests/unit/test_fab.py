"""FAB (fab-linf, fab-l2, fab-t): the box-constrained projection against an independent solver,
the exact minimal norm on linear models (closed form), the gate and the ε-gating of the
returned examples, queries, targets, the conformance kit and a smoke cell of the matrix."""

from __future__ import annotations

import pytest
import torch
from support.min_norm import attack_once
from torch import nn

from advbench import ThreatModel, load_registry
from advbench.algorithms.fab import boundary_step

NAMES = {"linf": "fab-linf", "l2": "fab-l2"}
DUAL = {"linf": 1, "l2": 2}


@pytest.fixture(scope="module")
def attacks():
    registry = load_registry()
    return {name: registry.get("attack", name).cls for name in ("fab-linf", "fab-l2", "fab-t")}


def linear_world(classes: int = 5, n: int = 40, seed: int = 0):
    """A linear classifier on 20 inputs, points near the box's centre labelled by it, and
    each point's exact minimal distance to another class per norm: min over j ≠ y of
    (z_y − z_j) / ‖w_y − w_j‖_q, q dual to the norm (the box stays inactive: the boundary is
    close, the box far)."""
    torch.manual_seed(seed)
    layer = nn.Linear(20, classes)
    with torch.no_grad():
        layer.weight.mul_(3)
    model = nn.Sequential(nn.Flatten(), layer).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = 0.4 + 0.2 * torch.rand(n, 1, 4, 5, generator=torch.Generator().manual_seed(seed))
    z = model(x)
    y = z.argmax(dim=1)
    gaps = z.gather(1, y.view(-1, 1)) - z
    rows = layer.weight[y].unsqueeze(1) - layer.weight.unsqueeze(0)
    distances = {}
    for norm, q in DUAL.items():
        d = gaps / torch.linalg.vector_norm(rows, ord=q, dim=2).clamp_min(1e-12)
        d[torch.arange(n), y] = torch.inf
        distances[norm] = d.min(dim=1).values
    return model, x, y, distances


# ---------------------------------------------------------------- the projection


def bisected_step(point, normal, offset, norm):
    """The same minimal step by bisection on its level λ (independent of the sort-based
    solver): each coordinate moves towards sign(normal·offset) by min(λ, room) (L∞) or by
    min(λ·|normal|, room) (L2), λ the smallest level whose step meets the offset."""
    normal = normal * torch.where(offset < 0, -1.0, 1.0).unsqueeze(1)
    need = offset.abs()
    room = torch.where(normal > 0, 1 - point, point)

    def step(level):
        if norm == "linf":
            return normal.sign() * torch.minimum(level.unsqueeze(1), room)
        return normal.sign() * torch.minimum(level.unsqueeze(1) * normal.abs(), room)

    low, high = torch.zeros(len(point)), torch.full((len(point),), 1e6)
    for _ in range(200):
        middle = (low + high) / 2
        enough = (normal * step(middle)).sum(dim=1) >= need
        high, low = torch.where(enough, middle, high), torch.where(enough, low, middle)
    return step(high)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_boundary_step_is_the_bisected_minimal_step(norm):
    generator = torch.Generator().manual_seed(0)
    point, normal = torch.rand(300, 30, generator=generator), torch.randn(300, 30,
                                                                        generator=generator)
    normal[:, :4] = 0  # coordinates the hyperplane ignores stay put
    offset = torch.randn(300, generator=generator) * 3  # some beyond the box's reach
    step = boundary_step(point, normal, offset, norm)
    assert torch.allclose(step, bisected_step(point, normal, offset, norm), atol=1e-5)
    assert (point + step >= -1e-6).all() and (point + step <= 1 + 1e-6).all()
    assert (step[:, :4] == 0).all()
    reach = torch.where(offset >= 0, 1.0, -1.0).unsqueeze(1) * normal
    most = (normal * torch.where(reach > 0, 1 - point, -point) * (reach != 0)).sum(dim=1)
    reachable = most.abs() >= offset.abs()
    assert 0 < int(reachable.sum()) < len(point)  # both cases are exercised
    hit = (normal * step).sum(dim=1)
    assert torch.allclose(hit[reachable], offset[reachable], atol=1e-4)
    corner = torch.where(reach > 0, 1 - point, -point) * (reach != 0)
    assert torch.allclose(step[~reachable], corner[~reachable], atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_boundary_step_without_the_box_is_the_closed_form(norm):
    """Far from the box's faces: L2 δ = c·w/‖w‖₂², L∞ δ = c·sign(w)/‖w‖₁."""
    normal = torch.tensor([[1.0, -2.0, 0.5, 0.0]])
    point, offset = torch.full((1, 4), 0.5), torch.tensor([0.1])
    expected = (0.1 * normal / normal.square().sum() if norm == "l2"
                else 0.1 * normal.sign() / normal.abs().sum())
    assert torch.allclose(boundary_step(point, normal, offset, norm), expected, atol=1e-7)


# ---------------------------------------------------------------- minimal norms


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["fab", "fab-t"])
def test_fab_finds_the_linear_models_minimal_norm(attacks, norm, name):
    """On a linear model the linearization is exact: the first step lands η = 1.05 beyond the
    nearest boundary, then the steps back towards x₀ close in to 0.5 % above it. FAB-T over
    every wrong class finds the same minimum as FAB's nearest class."""
    model, x, y, distances = linear_world()
    cls = attacks[NAMES[norm]] if name == "fab" else attacks["fab-t"]
    options = {} if name == "fab" else {"target_classes": 4}
    _, needed, _ = attack_once(cls, model, x, y, ThreatModel(norm, 0.0), iterations=20,
                               early_exit=False, **options)
    ratio = needed / distances[norm]
    assert (ratio >= 1 - 1e-4).all(), ratio.min()  # never below the true minimum
    assert (ratio <= 1.01).all(), ratio.max()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_over_fewer_targets_finds_no_smaller_norm(attacks, norm):
    """One target class only gives that class's boundary: never nearer than the nearest."""
    model, x, y, distances = linear_world()
    _, needed, _ = attack_once(attacks["fab-t"], model, x, y, ThreatModel(norm, 0.0),
                               iterations=20, early_exit=False, target_classes=1)
    assert (needed >= distances[norm] * (1 - 1e-4)).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targets_are_reached(attacks, norm):
    """With ``ctx.targets`` FAB steers to the given class, and where its norm is within ε the
    example is classified as that class."""
    model, x, y, distances = linear_world()
    targets = (y + 1) % 5
    result, needed, _ = attack_once(attacks["fab-t"], model, x, y, ThreatModel(norm, 10.0),
                                    targets=targets, iterations=20, early_exit=False)
    assert needed.isfinite().all()
    assert (needed >= distances[norm] * (1 - 1e-4)).all()
    assert torch.equal(model(result.x_adv).argmax(dim=1), targets)


def test_bad_settings_are_refused(attacks):
    with pytest.raises(ValueError, match="iterations"):
        attacks["fab-linf"](iterations=0)
    with pytest.raises(ValueError, match="target_classes"):
        attacks["fab-t"](target_classes=0)
    with pytest.raises(ValueError, match="beta"):
        attacks["fab-l2"](beta=1.0)
