"""APGD (apgd-ce, apgd-dlr, apgd-t) and the DLR / margin losses: closed forms, the paper's
schedule, and invariants on the trained seed CNN (threat model, strength against PGD, targets,
queries, early exit, a logit-scaled model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import advbench
from advbench import AttackContext, Oracle, ThreatModel
from advbench.algorithms.apgd import apgd, checkpoints, top_classes
from advbench.algorithms.losses import (
    dlr,
    dlr_loss,
    margin,
    margin_loss,
    targeted_dlr,
    targeted_dlr_loss,
)
from advbench.conformance import check_attack
from advbench.oracle import cross_entropy_sum
from advbench.running.evaluate import predict
from advbench.threat import perturbation_size

CPU = torch.device("cpu")
NAMES = ("apgd-ce", "apgd-dlr", "apgd-t")
EPS = {"linf": 0.1, "l2": 1.5}
MODERATE = {"linf": 0.02, "l2": 0.5}


def run(model, attack, x, y, threat, seed=0, targets=None):
    """Through the harness's gate: (adversarial batch, oracle)."""
    oracle = Oracle(model, "gradient", len(x))
    result = attack.perturb(oracle, x, y, threat,
                            AttackContext(torch.Generator().manual_seed(seed), targets))
    assert result.reason is None, result.reason
    return result.x_adv, oracle


def robust_accuracy(model, x, x_adv, y) -> float:
    clean = predict(model, x, 500, CPU) == y
    return float((clean & (predict(model, x_adv, 500, CPU) == y)).float().mean())


class Scaled(nn.Module):
    """The model with its logits multiplied by ``factor``: same decisions, saturated softmax."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


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


@pytest.mark.parametrize("name", NAMES)
def test_conformance(registry, name):
    check_attack(registry.get("attack", name).cls)


def test_rejects_bad_arguments(registry):
    cls = registry.get("attack", "apgd-ce").cls
    for bad in ({"iterations": 0}, {"restarts": 0}, {"rho": 0.0}, {"momentum": 1.5}):
        with pytest.raises(ValueError):
            cls(**bad)
    with pytest.raises(ValueError):
        registry.get("attack", "apgd-t").cls(target_classes=0)


# ---------------------------------------------------------------- on the trained seed CNN


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_norm_bounds_hold(registry, trained_cnn, batch, name, norm):
    x, y = batch[0][:64], batch[1][:64]
    threat = ThreatModel(norm, EPS[norm])
    attack = registry.get("attack", name).cls(iterations=10, target_classes=2) \
        if name == "apgd-t" else registry.get("attack", name).cls(iterations=10)
    raw = attack.run(Oracle(trained_cnn, "gradient", len(x)), x.clone(), y.clone(), threat,
                     AttackContext(torch.Generator().manual_seed(0)))
    assert raw.min() >= 0 and raw.max() <= 1
    assert (perturbation_size(raw - x, norm) <= threat.eps + 1e-6).all()
    clean = robust_accuracy(trained_cnn, x, x, y)
    assert robust_accuracy(trained_cnn, x, raw, y) < 0.4 * clean  # a large ε: it did move


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_at_least_as_strong_as_pgd(registry, trained_cnn, batch, norm):
    """Same budget of 20 gradients per sample: APGD-CE leaves no more robust samples than
    PGD-20 (Madry's step rule), give or take one sample in 200."""
    x, y = batch[0][:200], batch[1][:200]
    threat = ThreatModel(norm, MODERATE[norm])
    pgd = registry.get("attack", f"pgd-{norm}").cls(steps=20)
    ours = registry.get("attack", "apgd-ce").cls(iterations=20)
    pgd_acc = robust_accuracy(trained_cnn, x, run(trained_cnn, pgd, x, y, threat)[0], y)
    apgd_acc = robust_accuracy(trained_cnn, x, run(trained_cnn, ours, x, y, threat)[0], y)
    clean = robust_accuracy(trained_cnn, x, x, y)
    assert 0.1 < pgd_acc < clean  # a budget where both have work to do
    assert apgd_acc <= pgd_acc + 1 / 200


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_targeted_mode_reaches_the_targets(registry, trained_cnn, batch, name):
    x, y = batch[0][:100], batch[1][:100]
    # The runner-up class (as in test_pgd: this weak CNN's worst pairs stay out of reach).
    targets = trained_cnn(x).scatter(1, y[:, None], -torch.inf).argmax(dim=1)
    attack = registry.get("attack", name).cls(iterations=20)
    x_adv, _ = run(trained_cnn, attack, x, y, ThreatModel("linf", 0.3), targets=targets)
    predicted = predict(trained_cnn, x_adv, 500, CPU)
    # Cross-entropy towards the target reaches ~0.99 of them; the targeted DLR loss (AutoAttack's,
    # for apgd-dlr and apgd-t) raises the target's logit over the true class's, not over every
    # other, so a few samples stop at a third class: 0.88 to 0.9+ by the machine's numerics.
    floor = 0.95 if name == "apgd-ce" else 0.85
    assert (predicted == targets).float().mean() >= floor
    assert (predicted != y).float().mean() >= 0.97  # and almost every sample is fooled


@pytest.mark.slow
def test_queries_are_iterations_times_restarts_for_unfooled_samples(registry, trained_cnn,
                                                                    batch):
    x, y = batch[0][:100], batch[1][:100]
    threat = ThreatModel("linf", 0.01)
    attack = registry.get("attack", "apgd-ce").cls(iterations=12, restarts=2)
    x_adv, oracle = run(trained_cnn, attack, x, y, threat)
    still = predict(trained_cnn, x_adv, 500, CPU) == y
    assert still.sum() > 10 and (~still).sum() > 0
    assert (oracle.queries[still] == 12 * 2).all()
    assert (oracle.queries[~still] <= 12 * 2).all()
    assert (oracle.queries[~still] < 12 * 2).any()  # early exit saves fooled samples' queries
    # apgd-t: one clean forward, then iterations × restarts per round.
    targeted = registry.get("attack", "apgd-t").cls(iterations=5, restarts=1, target_classes=3)
    x_adv, oracle = run(trained_cnn, targeted, x, y, threat)
    still = predict(trained_cnn, x_adv, 500, CPU) == y
    assert (oracle.queries[still] == 1 + 5 * 3).all()


@pytest.mark.slow
def test_early_exit_changes_work_not_result(registry, trained_cnn, batch):
    x, y = batch[0][:100], batch[1][:100]
    threat = ThreatModel("l2", 0.5)
    cls = registry.get("attack", "apgd-dlr").cls
    fast, fast_oracle = run(trained_cnn, cls(iterations=15, restarts=2), x, y, threat)
    slow, slow_oracle = run(trained_cnn, cls(iterations=15, restarts=2, early_exit=False),
                            x, y, threat)
    fooled = predict(trained_cnn, fast, 500, CPU) != y
    assert torch.equal(fooled, predict(trained_cnn, slow, 500, CPU) != y)
    assert torch.allclose(fast[fooled], slow[fooled], atol=1e-6)
    assert fast_oracle.queries.sum() < slow_oracle.queries.sum()


@pytest.mark.slow
def test_apgd_dlr_breaks_a_logit_scaled_model(registry, trained_cnn, batch):
    """Logits × 10⁴ keep every decision but zero most cross-entropy gradients: PGD stalls on
    those samples, APGD-DLR (scale-invariant) does as well as against the plain model."""
    x, y = batch[0][:100], batch[1][:100]
    scaled = Scaled(trained_cnn, 1e4).eval()
    ce_grad, _ = Oracle(scaled, "gradient", len(x)).gradient(x, y)
    dlr_grad, _ = Oracle(scaled, "gradient", len(x)).gradient(x, y, loss=dlr_loss)
    # The samples attacks work on: correct ones (a wrong one ranked third has DLR ≡ 1, flat).
    correct = predict(scaled, x, 500, CPU) == y
    zero_ce = ce_grad[correct].flatten(1).abs().amax(dim=1) == 0
    assert zero_ce.float().mean() > 0.5
    assert (dlr_grad[correct].flatten(1).abs().amax(dim=1) > 0).all()
    threat = ThreatModel("linf", 0.05)
    pgd_scaled = robust_accuracy(scaled, x, run(scaled, registry.get("attack", "pgd-linf").cls(
        steps=20), x, y, threat)[0], y)
    dlr_cls = registry.get("attack", "apgd-dlr").cls
    dlr_scaled = robust_accuracy(scaled, x, run(scaled, dlr_cls(iterations=20), x, y,
                                                threat)[0], y)
    dlr_plain = robust_accuracy(trained_cnn, x, run(trained_cnn, dlr_cls(iterations=20), x, y,
                                                    threat)[0], y)
    assert dlr_scaled <= dlr_plain + 0.02
    assert pgd_scaled >= dlr_scaled + 0.2


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
