"""Speed-up of ``--executor processes --workers 2`` over ``local`` (issue #8).

    tox -e bench -- -k executors        (or: pytest benchmarks/bench_executors.py -s ...)

A 12-cell matrix (fgsm, fgm, pgd-linf, pgd-l2, random-search L∞ and L2 × none, adv-train-fgsm)
on 150 Fashion-MNIST test images, the defended models trained once beforehand into a shared
cache, so both executors time the same work: preparing the defended models (loading, clean
predictions, certification) and attacking. The processes' wall time includes starting them.
Plain wall-clock timing, interleaved, the minimum of two runs each: the machine is shared.
"""

from __future__ import annotations

import time

from advbench import run_matrix
from advbench.running.executors.base import LocalExecutor, ProcessExecutor

MATRIX = dict(attacks="fgsm,fgm,pgd-linf,pgd-l2,random-search", defenses="none,adv-train-fgsm",
              preset="smoke", n_train=5000, n_eval=150, seed=0)
REPEATS = 2


def timed(executor, cache) -> tuple[float, int]:
    started = time.perf_counter()
    frame = run_matrix(**MATRIX, executor=executor, cache_dir=cache)
    return time.perf_counter() - started, int((frame["attack"] != "worst-case").sum())


def test_processes_speed_up_over_local(tmp_path):
    cache = tmp_path / "cache"
    run_matrix(**{**MATRIX, "attacks": "fgsm"}, cache_dir=cache)  # train both models once
    local, processes = [], []
    for _ in range(REPEATS):
        seconds, cells = timed(LocalExecutor(), cache)
        local.append(seconds)
        seconds, _ = timed(ProcessExecutor(2), cache)
        processes.append(seconds)
    assert cells >= 8
    print(f"\n{cells} cells: local {min(local):.1f} s, processes --workers 2 "
          f"{min(processes):.1f} s, speed-up {min(local) / min(processes):.2f}x "
          f"(all runs: local {[round(s, 1) for s in local]}, "
          f"processes {[round(s, 1) for s in processes]})")
