"""What the seal costs a cell: PGD on the seed CNN, Fashion-MNIST, CPU, sealed against unsealed.

    python -m pytest benchmarks/bench_guard.py -o python_files='bench_*.py' --benchmark-enable -s

(a) End to end: a PGD-10 cell (early exit off, 500 test images, batches of 250) through
    ``attack_cell`` three ways, interleaved so that all see the same machine: unsealed
    (``sealed=False``); sealed with a seal made once per defended model, as the worker runs
    cells; sealed with a fresh seal per cell (the pristine copies taken inside the timing: the
    worst case). Each time is the minimum over the repeats (the machine is shared, and the
    minimum is the run least disturbed by others), with its ratio to the unsealed cell. All three
    must give exactly the same predictions and query counts.
(b) The seal's own work, timed on its own (so that the machine's noise, larger than the seal's
    cost, does not hide it): opening and closing a cell, the check after each batch, and the
    hooks' cost per forward+backward pass; added up for the cell of (a) and divided by the
    unsealed cell's time. Target for both: under 2 %.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import torch

from advbench import Oracle, Split, ThreatModel
from advbench.running.evaluate import CellOutcome, CellSpec, attack_cell
from advbench.seal import Pristine, Seal
from advbench_plugins.pgd_linf import PGDLinf

BATCH, STEPS, REPEATS, N_EVAL = 250, 10, 5, 500
CPU = torch.device("cpu")
THREAT = ThreatModel("linf", 0.1)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def setup(seed_cnn_cell) -> tuple[torch.nn.Module, Split, torch.Tensor]:
    return seed_cnn_cell


def graded(data: Split, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"evaluation images": data.x, "evaluation labels": data.y, "clean predictions": clean}


def cell(model: torch.nn.Module, data: Split, clean: torch.Tensor, **sealing) -> CellOutcome:
    attack = PGDLinf(steps=STEPS, early_exit=False)
    spec = CellSpec(batch_size=BATCH, device=CPU, seed=0, sealed=sealing.get("sealed", True))
    return attack_cell(model, attack, data, clean, THREAT, spec, seal=sealing.get("seal"))


def best_of(function: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def sealed_pass(seal: Seal, model: torch.nn.Module, x: torch.Tensor,
                y: torch.Tensor) -> tuple[float, float]:
    """Seconds of one gradient pass through a sealed oracle, and of the check after it."""
    with seal.cell():
        watch = seal.watch("gradient", None, 1, len(x))
        oracle = Oracle(model, "gradient", len(x), guard=watch)
        start = time.perf_counter()
        oracle.gradient(x, y)
        middle = time.perf_counter()
        assert seal.verdict(watch, oracle, PGDLinf()) is None
        return middle - start, time.perf_counter() - middle


def open_and_close(seal: Seal) -> None:
    with seal.cell():
        pass


def test_seal_overhead_on_a_pgd_cell(setup):
    model, data, clean = setup
    kept = Seal(model, [Pristine(graded(data, clean))])  # once per defended model, as the worker
    ways = {"unsealed": {"sealed": False}, "sealed (seal kept)": {"seal": kept},
            "sealed (fresh seal per cell)": {}}
    best = dict.fromkeys(ways, float("inf"))
    outcomes = {}
    for _ in range(REPEATS):
        for name, sealing in ways.items():
            start = time.perf_counter()
            outcomes[name] = cell(model, data, clean, **sealing)
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["unsealed"]
    print(f"\n[bench_guard a] PGD-{STEPS} cell, {N_EVAL} images, batches of {BATCH}, CPU, "
          f"{torch.get_num_threads()} threads (minimum of {REPEATS} interleaved runs)")
    for name, seconds in best.items():
        print(f"[bench_guard a] {name:30s} {seconds * 1e3:8.0f} ms  ratio {seconds / base:.4f}")
    for name, outcome in outcomes.items():
        assert outcome.invalid_reason is None, name
        assert torch.equal(outcome.adv_pred, outcomes["unsealed"].adv_pred), name
        assert torch.equal(outcome.queries, outcomes["unsealed"].queries), name

    # (b) the seal's own work, each part timed alone
    attacked = int((clean == data.y).sum())
    batches = -(-attacked // BATCH)
    passes = batches * STEPS  # one gradient pass per step and batch (early exit off)
    x, y = data.x[:BATCH], data.y[:BATCH]
    plain = hooked = check = float("inf")
    for _ in range(20):  # interleaved: the same pass without and with the seal's hooks armed
        plain = min(plain, best_of(lambda: Oracle(model, "gradient", BATCH).gradient(x, y), 1))
        seconds = sealed_pass(kept, model, x, y)
        hooked, check = min(hooked, seconds[0]), min(check, seconds[1])
    opening = best_of(lambda: open_and_close(kept), 5)
    fresh = best_of(lambda: Seal(model, [Pristine(graded(data, clean))]), 5)
    hooks = max(0.0, hooked - plain)
    total = opening + batches * check + passes * hooks
    print(f"[bench_guard b] per cell: open+close {opening * 1e3:.2f} ms; per batch: check "
          f"{check * 1e3:.2f} ms; per fwd+bwd pass: hooks {hooks * 1e3:.3f} ms "
          f"(pass {plain * 1e3:.1f} ms sealed {hooked * 1e3:.1f} ms); a fresh seal "
          f"{fresh * 1e3:.1f} ms")
    print(f"[bench_guard b] the seal's work in this cell: {total * 1e3:.1f} ms = "
          f"{total / base:.2%} of the unsealed cell ({batches} batches, {passes} passes); "
          f"with a fresh seal {(total + fresh) / base:.2%}")
    print("[bench_guard] target: under 2 %")
