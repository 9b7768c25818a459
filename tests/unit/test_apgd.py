"""APGD (apgd-ce, apgd-dlr, apgd-t) and the DLR / margin losses: closed forms, the paper's
schedule, and invariants on the trained seed CNN (threat model, strength against PGD, targets,
queries, early exit, a logit-scaled model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advbench
from advbench import Oracle, ThreatModel
from advbench.algorithms.apgd import apgd, checkpoints, top_classes
from advbench.algorithms.losses import (
    dlr,
    dlr_loss,
    margin,
    margin_loss,
    targeted_dlr,
    targeted_dlr_loss,
)
from advbench.oracle import cross_entropy_sum
from advbench.threat import perturbation_size

# ---------------------------------------------------------------- losses, closed forms


def test_losses_are_exported_for_any_attack():
    assert advbench.dlr_loss is dlr_loss and advbench.margin_loss is margin_loss
    assert advbench.targeted_dlr_loss is targeted_dlr_loss


def test_dlr_invariant_to_shift_and_positive_scale():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (64,), generator=generator)
    t = (y + 1 + torch.randint(0, 9, (64,), generator=generator)) % 10
    shift = torch.randn(64, 1, generator=generator, dtype=torch.float64) * 100
    for scale in (1e-2, 7.0, 1e4):
        moved = logits * scale + shift
        assert torch.allclose(dlr(moved, y), dlr(logits, y), rtol=1e-9, atol=1e-9)
        assert torch.allclose(targeted_dlr(moved, y, t), targeted_dlr(logits, y, t),
                              rtol=1e-9, atol=1e-9)
    # ... but not to a negative scale (it reverses the ranking), nor is the margin scale-free.
    assert not torch.allclose(dlr(-logits, y), dlr(logits, y))
    assert torch.allclose(margin(logits * 7.0 + shift, y), 7.0 * margin(logits, y))


def test_sign_conventions():
    logits = torch.tensor([[5.0, 2.0, 1.0, 0.0], [1.0, 4.0, 0.0, -1.0]])
    y = torch.tensor([0, 0])  # the first row is right, the second wrong
    assert margin(logits, y).tolist() == [3.0, -3.0]
    assert margin_loss(logits, y).item() == 0.0  # −(3 − 3)
    # untargeted DLR: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3): −3/(5 − 1) and +3/(4 − 0).
    assert torch.allclose(dlr(logits, y), torch.tensor([-0.75, 0.75]))
    assert ((dlr(logits, y) > 0) == (logits.argmax(1) != y)).all()
    # targeted towards class 2: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2).
    t = torch.tensor([2, 2])
    assert torch.allclose(targeted_dlr(logits, y, t), torch.tensor([-4 / 4.5, -1 / 4.5]))
    assert targeted_dlr_loss(y)(logits, t).item() == pytest.approx((-4 - 1) / 4.5)
    assert dlr_loss(logits, y).item() == pytest.approx(0.0, abs=1e-6)


def test_dlr_gradient_is_nonzero_where_cross_entropy_vanishes():
    """Logits × 10⁴: the softmax is exactly one-hot in float32, so the cross-entropy gradient
    is exactly zero; the DLR gradient is the closed form, unchanged in direction."""
    base = torch.tensor([[3.0, 2.0, 0.5, -1.0, 0.0]])
    y = torch.tensor([0])
    logits = (base * 1e4).requires_grad_(True)
    (ce_grad,) = torch.autograd.grad(cross_entropy_sum(logits, y), logits)
    assert (ce_grad == 0).all()
    (dlr_grad,) = torch.autograd.grad(dlr_loss(logits, y), logits)
    z = logits.detach()[0].double()
    span, gap = z[0] - z[2], z[0] - z[1]  # z_π1 − z_π3 (π1 = y = 0, π2 = 1, π3 = 2)
    expected = torch.zeros(5, dtype=torch.float64)
    expected[0] = -1 / span + gap / span**2  # z_y is also z_π1
    expected[1] = 1 / span
    expected[2] = -gap / span**2
    assert torch.allclose(dlr_grad[0].double(), expected, rtol=1e-5, atol=0)
    assert dlr_grad.abs().max() > 0


# ---------------------------------------------------------------- schedule and core


def test_checkpoints_are_the_papers_for_100_iterations():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9]
    assert checkpoints(1) == [0]


def test_top_classes_exclude_the_label():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 6.0]])
    assert top_classes(logits, torch.tensor([1, 3]), 2).tolist() == [[3, 2], [0, 1]]
    assert top_classes(logits, torch.tensor([1, 3]), 9).shape == (2, 3)


def test_rejects_bad_arguments(registry):
    cls = registry.get("attack", "apgd-ce").cls
    for bad in ({"iterations": 0}, {"restarts": 0}, {"rho": 0.0}, {"momentum": 1.5}):
        with pytest.raises(ValueError):
            cls(**bad)
    with pytest.raises(ValueError):
        registry.get("attack", "apgd-t").cls(target_classes=0)


# ---------------------------------------------------------------- on the trained seed CNN


def test_apgd_function_targets_tiny_linear_model():
    """The core on a 2-class linear model in closed form: with ε past the decision boundary,
    both untargeted and targeted runs cross it, and stay inside the ball."""
    model = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
    x = torch.tensor([[0.6, 0.4, 0.3, 0.5]])
    y = torch.tensor([0])
    oracle = Oracle(model, "gradient", 1)
    threat = ThreatModel("linf", 0.2)
    x_adv = apgd(oracle.gradient, x, y, threat, iterations=10, loss="dlr", random_start=False)
    assert model(x_adv).argmax(1).item() != 0
    assert perturbation_size(x_adv - x, "linf").item() <= 0.2 + 1e-6
    x_adv = apgd(oracle.gradient, x, y, threat, iterations=10, targets=torch.tensor([2]),
                 random_start=False)
    assert model(x_adv).argmax(1).item() == 2
