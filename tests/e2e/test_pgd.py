"""PGD (L∞ and L2): the sanity checks of Carlini et al. 2019 on the trained seed CNN, plus the
invariants of the shared primitive (early exit, restarts, seeding, zero gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbench import AttackContext, Oracle, Split, ThreatModel
from advbench.algorithms.pgd import model_gradient, model_logits, pgd
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench.threat import perturbation_size
from advbench_plugins import pgd_l2, pgd_linf
from advbench_plugins.fgsm import FGSM

CPU = torch.device("cpu")
ATTACKS = {"linf": pgd_linf.PGDLinf, "l2": pgd_l2.PGDL2}
# A moderate ε per norm: the seed CNN keeps some, not all, of its accuracy under PGD-20.
MODERATE = {"linf": 0.02, "l2": 0.5}


def run_attack(model, attack, x, y, threat, seed=0, targets=None):
    """Perturb through the harness's gate; return the adversarial batch and the oracle."""
    oracle = Oracle(model, attack.access, len(x))
    ctx = AttackContext(torch.Generator().manual_seed(seed), targets)
    result = attack.perturb(oracle, x, y, threat, ctx)
    assert result.reason is None
    return result.x_adv, oracle


def cell(model, attack, x, y, threat, seed=0):
    """Per-sample robustness (correct before and after) as the runner grades it."""
    data = Split(x, y)
    clean = predict(model, x, 500, CPU)
    return attack_cell(model, attack, data, clean, threat, CellSpec(batch_size=500, device=CPU,
                       seed=seed)).robust


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 1.0)])
def test_output_inside_ball_and_box(trained_cnn, batch, norm, eps):
    x, y = batch[0][:100], batch[1][:100]
    attack, threat = ATTACKS[norm](steps=5), ThreatModel(norm, eps)
    raw = attack.run(Oracle(trained_cnn, "gradient", len(x)), x.clone(), y.clone(), threat,
                     AttackContext(torch.Generator().manual_seed(0)))
    assert raw.shape == x.shape and raw.dtype == x.dtype
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
    assert float(perturbation_size(raw - x, norm).max()) <= eps + 1e-6
    x_adv, _ = run_attack(trained_cnn, attack, x, y, threat)
    assert torch.equal(x_adv, raw)


def test_pgd_at_most_fgsm(trained_cnn, batch):
    x, y = batch[0][:300], batch[1][:300]
    threat = ThreatModel("linf", MODERATE["linf"])
    pgd_robust = cell(trained_cnn, pgd_linf.PGDLinf(), x, y, threat)
    fgsm_robust = cell(trained_cnn, FGSM(), x, y, threat)
    assert 0 < int(pgd_robust.sum()) <= int(fgsm_robust.sum())


@pytest.mark.parametrize("norm,grid", [("linf", [0.0, 0.01, 0.02, 0.05]),
                                       ("l2", [0.0, 0.25, 0.5, 1.0])])
def test_robust_accuracy_never_rises_with_eps(trained_cnn, batch, norm, grid):
    x, y = batch[0][:200], batch[1][:200]
    accuracies = [float(cell(trained_cnn, ATTACKS[norm](steps=10), x, y, ThreatModel(norm, eps))
                        .float().mean()) for eps in grid]
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[-1] < accuracies[0]


@pytest.mark.parametrize("norm,eps", [("linf", 1.0), ("l2", 28.0)])
def test_unbounded_eps_fools_almost_everything(trained_cnn, batch, norm, eps):
    x, y = batch[0][:200], batch[1][:200]
    robust = cell(trained_cnn, ATTACKS[norm](), x, y, ThreatModel(norm, eps))
    assert float(robust.float().mean()) <= 0.02


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 5.0)])
def test_targeted_reaches_target(trained_cnn, batch, norm, eps):
    x, y = batch[0][:200], batch[1][:200]
    # The runner-up class: this weak CNN's worst pairs (e.g. shirt → sneaker) stay out of reach
    # of 20 steps even at ε = 0.3, which would test the model rather than the attack.
    targets = trained_cnn(x).scatter(1, y[:, None], -torch.inf).argmax(dim=1)
    x_adv, _ = run_attack(trained_cnn, ATTACKS[norm](), x, y, ThreatModel(norm, eps),
                          targets=targets)
    hit = predict(trained_cnn, x_adv, 500, CPU) == targets
    assert float(hit.float().mean()) >= 0.9


@pytest.mark.parametrize("norm,restarts", [("linf", 1), ("l2", 1), ("linf", 2)])
def test_early_exit_changes_work_not_results(trained_cnn, batch, norm, restarts):
    x, y = batch[0][:250], batch[1][:250]
    threat, steps = ThreatModel(norm, MODERATE[norm]), 8
    outputs = {}
    for early in (True, False):
        attack = ATTACKS[norm](steps=steps, restarts=restarts, early_exit=early)
        x_adv, oracle = run_attack(trained_cnn, attack, x, y, threat, seed=5)
        outputs[early] = (predict(trained_cnn, x_adv, 500, CPU) == y, oracle.queries)
    (robust_on, queries_on), (robust_off, queries_off) = outputs[True], outputs[False]
    assert torch.equal(robust_on, robust_off)
    assert int(queries_on.sum()) < int(queries_off.sum())
    assert bool((queries_on <= queries_off).all())
    if restarts == 1:
        assert bool((queries_off == steps).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_gives_clean_accuracy(trained_cnn, batch, norm):
    x, y = batch[0][:200], batch[1][:200]
    threat = ThreatModel(norm, 0.0)
    robust = cell(trained_cnn, ATTACKS[norm](steps=5), x, y, threat)
    assert torch.equal(robust, predict(trained_cnn, x, 500, CPU) == y)
    x_adv, _ = run_attack(trained_cnn, ATTACKS[norm](steps=3, early_exit=False), x, y, threat)
    assert torch.equal(x_adv, x)


def zero_gradient_model() -> nn.Module:
    """Constant (zero) logits: every input gradient is exactly zero, and class 0 wins ties."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    return model.eval()


@pytest.mark.parametrize("random_start", [False, True])
def test_l2_zero_gradient_gives_no_nan(batch, random_start):
    x = batch[0][:50]
    y = torch.zeros(50, dtype=torch.long)  # "correct" under the constant model: never fooled
    attack = pgd_l2.PGDL2(steps=5, random_start=random_start, early_exit=False)
    x_adv, oracle = run_attack(zero_gradient_model(), attack, x, y, ThreatModel("l2", 1.0))
    assert bool(torch.isfinite(x_adv).all())
    assert bool((oracle.queries == 5).all())
    if not random_start:
        assert torch.equal(x_adv, x)


def test_same_seed_same_output_and_model_gradient_matches_oracle(trained_cnn, batch):
    x, y = batch[0][:200], batch[1][:200]
    threat = ThreatModel("linf", MODERATE["linf"])
    first, _ = run_attack(trained_cnn, pgd_linf.PGDLinf(steps=5), x, y, threat, seed=7)
    again, _ = run_attack(trained_cnn, pgd_linf.PGDLinf(steps=5), x, y, threat, seed=7)
    other, _ = run_attack(trained_cnn, pgd_linf.PGDLinf(steps=5), x, y, threat, seed=8)
    assert torch.equal(first, again) and not torch.equal(first, other)
    raw = pgd(model_gradient(trained_cnn), x, y, threat, steps=5, step_size=0.5 * threat.eps,
              generator=torch.Generator().manual_seed(7))
    assert torch.equal(raw, first)


def test_restart_evaluation_by_forward_or_gradient_agree(trained_cnn, batch):
    x, y = batch[0][:100], batch[1][:100]
    threat = ThreatModel("l2", MODERATE["l2"])

    def attack(logits):
        return pgd(model_gradient(trained_cnn), x, y, threat, steps=3, step_size=0.3,
                   restarts=2, generator=torch.Generator().manual_seed(4), logits=logits)

    assert torch.equal(attack(model_logits(trained_cnn)), attack(None))


def test_return_final_keeps_last_iterate(trained_cnn, batch):
    x, y = batch[0][:200], batch[1][:200]
    threat = ThreatModel("linf", MODERATE["linf"])
    gradient = model_gradient(trained_cnn)

    def attack(**options):
        return pgd(gradient, x, y, threat, steps=5, step_size=0.5 * threat.eps,
                   generator=torch.Generator().manual_seed(2), **options)

    first = attack(early_exit=False)
    final = attack(early_exit=False, return_final=True)
    fooled_first = predict(trained_cnn, first, 500, CPU) != y
    # Rows never fooled end at the same last iterate; fooled rows keep walking uphill.
    assert torch.equal(final[~fooled_first], first[~fooled_first])
    loss = nn.functional.cross_entropy
    assert float(loss(trained_cnn(final), y)) > float(loss(trained_cnn(first), y))
    with pytest.raises(ValueError):
        attack(early_exit=True, return_final=True)
