"""What serving a defense costs a cell, in-process against served, side by side (seed CNN).

    python -m pytest benchmarks/bench_served.py -o python_files='bench_*.py' \
        --benchmark-enable -s

A third party's defense that wraps its model runs in a model server (docs/isolation.md): every
forward pass of the defended model is a request, every backward another. Two cells through
``attack_cell``, each against the wrapper built in this process and against the same wrapper
served, interleaved so that both see the same machine, each time the minimum over the repeats:
(a) PGD-20 L∞ (early exit off) on 500 Fashion-MNIST test images, batches of 250: one forward
    and one backward request per step and batch;
(b) random search L2 (score access, 100 queries per sample): many small forward requests.
Both ways must give exactly the same predictions and query counts. The server is started once,
before the timings (a run starts it once per defense, when the defended model is prepared).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from advbench import Defense, Split, ThreatModel, served_defense
from advbench.running.evaluate import CellOutcome, CellSpec, attack_cell
from advbench_plugins.pgd_linf import PGDLinf
from advbench_plugins.random_search import RandomSearch

BATCH, REPEATS = 250, 3
CPU = torch.device("cpu")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class Contrast(nn.Module):
    """The model behind a fixed contrast stretch: differentiable, deterministic, cheap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((1.2 * (x - 0.5) + 0.5).clamp(0, 1))


@dataclass(kw_only=True)
class ContrastDefense(Defense):
    name = "contrast"

    def wrap(self, model: nn.Module) -> nn.Module:
        return Contrast(model)


@pytest.fixture(scope="module")
def models(seed_cnn_cell):
    model, data, _ = seed_cnn_cell
    here = ContrastDefense().wrap(model).eval()
    with served_defense(ContrastDefense(), model) as (there, _):
        yield {"in-process": here, "served": there}, data


def cell(model: nn.Module, data: Split, attack, threat: ThreatModel) -> CellOutcome:
    clean = torch.zeros(len(data.x), dtype=torch.long)
    with torch.no_grad():
        clean = model(data.x).argmax(dim=1)
    torch.manual_seed(0)
    return attack_cell(model, attack, data, clean, threat,
                       CellSpec(batch_size=BATCH, device=CPU, seed=0))


CASES = {
    "a: PGD-20 Linf": (lambda: PGDLinf(steps=20, early_exit=False), ThreatModel("linf", 0.1)),
    "b: random search L2, 100 queries": (lambda: RandomSearch(max_queries=100),
                                         ThreatModel("l2", 1.5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_serving_overhead(models, case):
    defended, data = models
    make, threat = CASES[case]
    cell(defended["served"], data, make(), threat)  # warm, as after a run's first cell
    best = dict.fromkeys(defended, float("inf"))
    outcomes = {}
    for _ in range(REPEATS):
        for name, model in defended.items():
            start = time.perf_counter()
            outcomes[name] = cell(model, data, make(), threat)
            best[name] = min(best[name], time.perf_counter() - start)
    ratio = best["served"] / best["in-process"]
    print(f"\n[bench_served {case}] in-process {best['in-process']:.2f} s, served "
          f"{best['served']:.2f} s: ratio {ratio:.3f} (minimum of {REPEATS} interleaved runs, "
          f"{torch.get_num_threads()} threads)")
    for outcome in outcomes.values():
        assert outcome.invalid_reason is None
    assert torch.equal(outcomes["served"].adv_pred, outcomes["in-process"].adv_pred)
    assert torch.equal(outcomes["served"].queries, outcomes["in-process"].queries)
