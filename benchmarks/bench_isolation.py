"""What isolating an attack costs a cell, in-process against isolated, side by side (seed CNN).

    python -m pytest benchmarks/bench_isolation.py -o python_files='bench_*.py' \
        --benchmark-enable -s

Two cells, each through ``attack_cell`` in-process and isolated (``--isolation all``: the attack
in its own process, every oracle call a request to the harness), interleaved so that both see the
same machine, each time the minimum over the repeats (the machine is shared):
(a) PGD-20 L∞ (early exit off) on 500 Fashion-MNIST test images, batches of 250: few large
    requests (one gradient per step and batch). Target: isolated ≤ 1.10× in-process.
(b) Random search L2 (score access, 100 queries per sample) on the same images: many small
    requests. Target: ≤ 1.25×.
Both ways must give exactly the same predictions and query counts. The attack process is started
once, before the timings (a run starts it once, at its first isolated cell).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from advbench import Attack, Split, ThreatModel
from advbench.running.evaluate import CellOutcome, CellSpec, attack_cell
from advbench.running.isolation import AttackProcess, IsolatedRunner
from advbench_plugins.pgd_linf import PGDLinf
from advbench_plugins.random_search import RandomSearch

BATCH, REPEATS = 250, 3
CPU = torch.device("cpu")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def setup(seed_cnn_cell) -> tuple[torch.nn.Module, Split, torch.Tensor]:
    return seed_cnn_cell


@pytest.fixture(scope="module")
def process():
    started = AttackProcess()
    yield started
    started.close()


def cell(setup, attack: Attack, threat: ThreatModel, process: AttackProcess | None
         ) -> CellOutcome:
    model, data, clean = setup
    runner = None if process is None else IsolatedRunner(process, CPU, torch_seed=0)
    torch.manual_seed(0)
    spec = CellSpec(batch_size=BATCH, device=CPU, seed=0, runner=runner)
    return attack_cell(model, attack, data, clean, threat, spec)


CASES = {
    "a: PGD-20 Linf": (lambda: PGDLinf(steps=20, early_exit=False), ThreatModel("linf", 0.1),
                       1.10),
    "b: random search L2, 100 queries": (lambda: RandomSearch(max_queries=100),
                                         ThreatModel("l2", 1.5), 1.25),
}


@pytest.mark.parametrize("case", list(CASES))
def test_isolation_overhead(setup, process, case):
    make, threat, target = CASES[case]
    cell(setup, make(), threat, process)  # the process warm, as in a run after its first cell
    best = {"in-process": float("inf"), "isolated": float("inf")}
    outcomes = {}
    for _ in range(REPEATS):
        for name in best:
            start = time.perf_counter()
            outcomes[name] = cell(setup, make(), threat, process if name == "isolated" else None)
            best[name] = min(best[name], time.perf_counter() - start)
    ratio = best["isolated"] / best["in-process"]
    print(f"\n[bench_isolation {case}] in-process {best['in-process']:.2f} s, isolated "
          f"{best['isolated']:.2f} s: ratio {ratio:.3f} (target ≤ {target}; minimum of "
          f"{REPEATS} interleaved runs, {torch.get_num_threads()} threads)")
    for outcome in outcomes.values():
        assert outcome.invalid_reason is None
    assert torch.equal(outcomes["isolated"].adv_pred, outcomes["in-process"].adv_pred)
    assert torch.equal(outcomes["isolated"].queries, outcomes["in-process"].queries)
