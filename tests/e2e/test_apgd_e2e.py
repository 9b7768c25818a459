"""APGD (apgd-ce, apgd-dlr, apgd-t) and the DLR / margin losses: closed forms, the paper's
schedule, and invariants on the trained seed CNN (threat model, strength against PGD, targets,
queries, early exit, a logit-scaled model)."""

from __future__ import annotations

import pytest
import torch
from helpers import Scaled

from advbench import AttackContext, Oracle, ThreatModel
from advbench.algorithms.losses import (
    dlr_loss,
)
from advbench.conformance import check_attack
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


# ---------------------------------------------------------------- losses, closed forms


# ---------------------------------------------------------------- schedule and core


@pytest.mark.parametrize("name", NAMES)
def test_conformance(registry, name):
    check_attack(registry.get("attack", name).cls)


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
