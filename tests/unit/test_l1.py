"""The L1 threat model: its projection is the Euclidean one onto the ball, the gate measures
the sum of absolute changes with a rounding allowance that grows with ε, and runs plan L1
cells for an attack that declares the norm."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from support.l1 import L1Step

from advbench import ThreatModel, check_adversarial
from advbench.conformance import check_attack
from advbench.gate import allowance
from advbench.running.plan import resolve_eps
from advbench.threat import perturbation_size, project_l1


def test_projection_of_known_points():
    delta = torch.tensor([[3.0, 1.0], [1.0, 1.0], [0.5, -0.2], [-2.0, 4.0]])
    projected = project_l1(delta, 2.0)
    assert torch.allclose(projected, torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.5, -0.2],
                                                   [0.0, 2.0]]))
    spread = project_l1(torch.tensor([[1.0, -1.0, 1.0, -1.0]]), 2.0)
    assert torch.allclose(spread, torch.tensor([[0.5, -0.5, 0.5, -0.5]]))


def test_projection_is_the_closest_point_of_the_ball():
    """On the boundary, with the signs kept, and nearer in L2 than any other point of the
    ball (a thousand random ones, pushed to its boundary)."""
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(20, 1, 6, 6, generator=generator)
    eps = 3.0
    projected = project_l1(delta, eps)
    sizes = perturbation_size(projected, "l1")
    assert torch.allclose(sizes, torch.full_like(sizes, eps), atol=1e-5)
    assert bool(((projected * delta) >= 0).all())
    assert torch.equal(project_l1(projected, eps + 1e-4), projected)
    others = project_l1(torch.randn(1000, 1, 6, 6, generator=generator) * 5, eps)
    for sample, nearest in zip(delta, projected, strict=True):
        best = (sample - nearest).norm()
        assert bool(((sample - others).flatten(1).norm(dim=1) >= best - 1e-5).all())


def test_the_gate_measures_l1_and_allows_only_rounding():
    x = torch.full((1, 1, 2, 2), 0.5)
    delta = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 1, 2, 2)  # L1 0.6, L2 0.37
    assert check_adversarial(x, x + delta, ThreatModel("l1", 0.6)).reason is None
    assert "exceeds eps" in check_adversarial(x, x + delta, ThreatModel("l1", 0.59)).reason
    assert allowance("l1", 10.0) == pytest.approx(1e-6 + 1e-4)
    assert allowance("l2", 10.0) == allowance("linf", 10.0) == 1e-6


def test_a_projected_float32_perturbation_passes_the_gate():
    """Sums of 784 float32 values round by more than the other norms' 1e-6 at ε = 1: without
    the relative allowance an honest projection would make its cell invalid."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(500, 1, 28, 28, generator=generator)
    for eps in (1.0, 10.0):
        delta = project_l1(torch.randn(500, 1, 28, 28, generator=generator), eps)
        assert float(perturbation_size(delta, "l1").max()) > eps  # rounding, above ε
        threat = ThreatModel("l1", eps)
        assert check_adversarial(x, x + delta, threat).reason is None
        spread_over = torch.full((1, 1, 28, 28), eps * 1.001 / 784)  # 0.1 % above ε
        assert "exceeds eps" in check_adversarial(torch.zeros(1, 1, 28, 28), spread_over,
                                                  threat).reason


def test_an_l1_attack_passes_the_conformance_kit():
    check_attack(L1Step)


def test_runs_plan_l1_cells_at_the_dataset_default_or_the_request(registry):
    fashion = registry.get("dataset", "fashion-mnist").cls()
    attacks = [SimpleNamespace(cls=L1Step), registry.get("attack", "fgsm")]
    assert resolve_eps(None, attacks, fashion) == {"l1": [10.0], "linf": [0.1]}
    assert resolve_eps({"l1": [5, 0]}, attacks, fashion) == {"l1": [0.0, 5.0]}
    cifar = registry.get("dataset", "cifar10").cls()
    assert resolve_eps(None, attacks[:1], cifar) == {"l1": [12.0]}
