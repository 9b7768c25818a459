"""PGD speed on the seed CNN, Fashion-MNIST, batch 250, CPU (plain timing, printed as ratios).

    python -m pytest benchmarks/bench_pgd.py --benchmark-enable -s

(a) The bound: PGD-20 cannot beat 20 forward+backward input-gradient passes, so report
    (20 × one pass) / (PGD-20 with early exit off); ≥ 0.95 means the loop adds under 5 %.
(b) With early exit on, PGD-20 against torchattacks' PGD at the same settings (ε, α, steps,
    random start) on an undefended model: the speed ratio, and both robust accuracies, which
    must agree within one point.

Timings are the minimum over a few interleaved repeats (3 for (a), 2 for (b)): the machine is
shared, and the minimum is the run least disturbed by others.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import torch

from advbench import AttackContext, Oracle, ThreatModel
from advbench.algorithms.pgd import model_gradient
from advbench.running.evaluate import predict
from advbench_plugins.pgd_linf import PGDLinf

BATCH, STEPS, REPEATS, N_EVAL = 250, 20, 3, 500
CPU = torch.device("cpu")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def setup(seed_cnn_and_test) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The seed CNN after one epoch on 10k Fashion-MNIST images, and 500 test images."""
    model, x, y = seed_cnn_and_test(10_000)
    return model, x[:N_EVAL], y[:N_EVAL]


def timed(function: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    """Seconds one call took, and what it returned."""
    start = time.perf_counter()
    output = function()
    return time.perf_counter() - start, output


def ours(model: torch.nn.Module, attack: PGDLinf, x: torch.Tensor, y: torch.Tensor,
         eps: float) -> torch.Tensor:
    """PGD through the harness's oracle and gate, batch by batch."""
    parts = []
    for start in range(0, len(x), BATCH):
        xb, yb = x[start : start + BATCH], y[start : start + BATCH]
        ctx = AttackContext(torch.Generator().manual_seed(start))
        result = attack.perturb(Oracle(model, "gradient", len(xb)), xb, yb,
                                ThreatModel("linf", eps), ctx)
        assert result.x_adv is not None
        parts.append(result.x_adv)
    return torch.cat(parts)


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                    y: torch.Tensor) -> float:
    clean = predict(model, x, BATCH, CPU) == y
    adversarial = predict(model, x_adv, BATCH, CPU) == y
    return float((clean & adversarial).float().mean())


def test_pgd_loop_overhead_against_gradient_bound(setup):
    model, x, y = setup
    x, y = x[:BATCH], y[:BATCH]
    gradient = model_gradient(model)
    attack = PGDLinf(steps=STEPS, early_exit=False)
    bound, pgd_time = float("inf"), float("inf")
    for _ in range(REPEATS):  # interleaved, so both see the same machine
        bound = min(bound, timed(lambda: [gradient(x, y, None) for _ in range(STEPS)])[0])
        pgd_time = min(pgd_time, timed(lambda: ours(model, attack, x, y, 0.1))[0])
    print(f"\n[bench_pgd a] one fwd+bwd pass, batch {BATCH}: {bound / STEPS * 1e3:.1f} ms "
          f"({BATCH * STEPS / bound:.0f} images/s)")
    print(f"[bench_pgd a] PGD-{STEPS}, early exit off: {pgd_time * 1e3:.0f} ms; "
          f"bound {STEPS} × pass = {bound * 1e3:.0f} ms")
    print(f"[bench_pgd a] ratio (20 × bound) / PGD-20 = {bound / pgd_time:.3f} (target ≥ 0.95)")


@pytest.mark.parametrize("eps", [0.1, 0.02])
def test_pgd_early_exit_against_torchattacks(setup, eps):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = setup
    attack = PGDLinf(steps=STEPS, early_exit=True)
    reference = torchattacks.PGD(model, eps=eps, alpha=attack.rel_step_size * eps, steps=STEPS,
                                 random_start=True)

    def theirs() -> torch.Tensor:
        torch.manual_seed(0)
        return torch.cat([reference(x[i : i + BATCH], y[i : i + BATCH])
                          for i in range(0, len(x), BATCH)])

    ours_time, theirs_time = float("inf"), float("inf")
    for _ in range(REPEATS - 1):
        seconds, ours_adv = timed(lambda: ours(model, attack, x, y, eps))
        ours_time = min(ours_time, seconds)
        seconds, theirs_adv = timed(theirs)
        theirs_time = min(theirs_time, seconds)
    ours_acc = robust_accuracy(model, x, ours_adv, y)
    theirs_acc = robust_accuracy(model, x, theirs_adv, y)
    clean = float((predict(model, x, BATCH, CPU) == y).float().mean())
    print(f"\n[bench_pgd b] ε={eps} L∞, PGD-{STEPS}, {len(x)} images, clean accuracy {clean:.3f}")
    print(f"[bench_pgd b] ours (early exit): {len(x) / ours_time:.0f} images/s; "
          f"torchattacks: {len(x) / theirs_time:.0f} images/s; "
          f"speed-up ×{theirs_time / ours_time:.2f}")
    print(f"[bench_pgd b] robust accuracy: ours {ours_acc:.3f}, torchattacks {theirs_acc:.3f}")
    assert abs(ours_acc - theirs_acc) <= 0.01
