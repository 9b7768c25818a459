"""Black-box attacks against torchattacks (issue #4), seed CNN, Fashion-MNIST, CPU.

    python -m pytest benchmarks/bench_blackbox.py --benchmark-enable -s

(a) random-search against torchattacks' ``Square`` at an equal budget of 1,000 queries per image
    (theirs: 1 + 1,000), L∞ ε = 0.1, on the same images: both robust accuracies; ours must be
    no higher.
(b) one-pixel against torchattacks' ``OnePixel`` at an equal budget (1 pixel, population 48,
    20 generations; torchattacks hands scipy-style DE a multiplier of popsize / 3 parameters,
    so 48 members too) on the correctly classified among 50 test images (~1,900 candidates a
    generation: more images would not batch better on a CPU, see ``rows_per_pass``): both
    throughputs (images/s), their ratio, and both success rates.
    The share of our attack's time spent inside the model is printed too: the rest is all the
    attack's own work could ever save.

torchattacks is imported only here and the benchmarks skip without it. The model is trained
here (one epoch on 20k training images). Plain timing: (a) runs once (its point is robust
accuracy); (b) takes the minimum of two interleaved runs of each, as the machine is shared.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from advbench import AttackContext, Oracle, ThreatModel
from advbench.evaluate import predict
from advbench_plugins.one_pixel import OnePixel
from advbench_plugins.random_search import RandomSearch

N_SQUARE, QUERIES, EPS = 200, 1000, 0.1
N_PIXEL, POPULATION, GENERATIONS, REPEATS = 50, 48, 20, 2
CPU = torch.device("cpu")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def setup(seed_cnn_and_test) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The seed CNN after one epoch on 20k Fashion-MNIST training images; the test split."""
    model, x, y = seed_cnn_and_test(20_000)
    return model, x, y


class Timed(torch.nn.Module):
    """Wraps a model and adds up the seconds spent in its forward passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out


def correct_subset(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    keep = predict(model, x, 500, CPU) == y
    return x[keep], y[keep]


def test_random_search_vs_square(setup) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x_all, y_all = setup
    x, y = correct_subset(model, x_all[:N_SQUARE], y_all[:N_SQUARE])
    threat = ThreatModel("linf", EPS)

    oracle = Oracle(model, "scores", len(y), QUERIES)
    start = time.perf_counter()
    ours = RandomSearch(max_queries=QUERIES).perturb(
        oracle, x, y, threat, AttackContext(torch.Generator().manual_seed(0)))
    ours_time = time.perf_counter() - start
    assert ours.x_adv is not None, ours.reason

    square = torchattacks.Square(model, norm="Linf", eps=EPS, n_queries=QUERIES, p_init=0.8,
                                 n_restarts=1, loss="margin", seed=0)
    start = time.perf_counter()
    theirs = square(x, y)
    theirs_time = time.perf_counter() - start
    assert float((theirs - x).abs().max()) <= EPS + 1e-6

    ours_robust = int((predict(model, ours.x_adv, 500, CPU) == y).sum())
    theirs_robust = int((predict(model, theirs, 500, CPU) == y).sum())
    fooled = oracle.queries[predict(model, ours.x_adv, 500, CPU) != y].float()
    print(f"\n[random-search vs torchattacks Square] L∞ ε={EPS}, {QUERIES} queries, "
          f"{N_SQUARE} test images ({len(y)} correctly classified)")
    print(f"  robust accuracy  ours {ours_robust / N_SQUARE:.2%} ({ours_robust})   "
          f"torchattacks {theirs_robust / N_SQUARE:.2%} ({theirs_robust})")
    print(f"  ours: queries of successes mean {fooled.mean():.1f}, median "
          f"{fooled.median():.0f}; time ours {ours_time:.1f}s, torchattacks {theirs_time:.1f}s "
          f"(ratio {theirs_time / ours_time:.2f}x)")
    assert ours_robust <= theirs_robust


def test_one_pixel_vs_torchattacks(setup) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, x_all, y_all = setup
    x, y = correct_subset(model, x_all[:N_PIXEL], y_all[:N_PIXEL])
    n = len(y)

    attack = OnePixel(population=POPULATION, iterations=GENERATIONS)
    one_pixel = torchattacks.OnePixel(model, pixels=1, steps=GENERATIONS, popsize=POPULATION,
                                      inf_batch=4096)
    ours_times, theirs_times, model_times = [], [], []
    for _ in range(REPEATS):  # interleaved, so both see the same background load
        timed = Timed(model)
        oracle = Oracle(timed, "scores", n, attack.max_queries)
        start = time.perf_counter()
        ours = attack.perturb(oracle, x, y, ThreatModel("l0", 1),
                              AttackContext(torch.Generator().manual_seed(0)))
        ours_times.append(time.perf_counter() - start)
        model_times.append(timed.seconds)
        assert ours.x_adv is not None, ours.reason
        np.random.seed(0)  # torchattacks' differential evolution draws from numpy's global state
        start = time.perf_counter()
        theirs = one_pixel(x, y)
        theirs_times.append(time.perf_counter() - start)
        print(f"\n  run: ours {ours_times[-1]:.1f}s, torchattacks {theirs_times[-1]:.1f}s", end="",
              flush=True)
    ours_time, theirs_time = min(ours_times), min(theirs_times)
    model_time = model_times[ours_times.index(ours_time)]
    queries = int(oracle.queries.sum())

    ours_success = float((predict(model, ours.x_adv, 500, CPU) != y).float().mean())
    theirs_success = float((predict(model, theirs, 500, CPU) != y).float().mean())
    ours_rate, theirs_rate = n / ours_time, n / theirs_time
    print(f"\n[one-pixel vs torchattacks OnePixel] 1 pixel, population {POPULATION}, "
          f"{GENERATIONS} generations, {n} correctly classified test images")
    print(f"  throughput ours {ours_rate:.2f} img/s   torchattacks {theirs_rate:.2f} img/s   "
          f"ratio {ours_rate / theirs_rate:.2f}x (target ≥ 10x)")
    print(f"  success    ours {ours_success:.1%}   torchattacks {theirs_success:.1%}")
    print(f"  ours: {queries / n:.0f} queries/image (at most {attack.max_queries}); "
          f"{ours_time:.1f}s, of which {model_time:.1f}s ({model_time / ours_time:.0%}) "
          f"inside the model; torchattacks {theirs_time:.1f}s")
    assert float((ours.x_adv != x).flatten(1).sum(1).max()) <= 1
