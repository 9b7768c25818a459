"""Why the seed CNN is built channels-last: its passes on CPU in both memory layouts, side by side.

    python -m pytest benchmarks/bench_layout.py -o python_files='bench_*.py' --benchmark-enable -s

The same weights in the contiguous (NCHW) layout and in channels-last (NHWC), timed interleaved:
a forward pass without gradients (what black-box attacks and predictions pay per query), an
input-gradient pass (what a gradient attack pays per step), and a training step (forward,
backward, optimizer step). Each time is the minimum over the repeats (the machine is shared,
and the minimum is the run least disturbed by others). The two layouts must agree to float
rounding.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from advbench_plugins.seed_cnn import SeedCNN

BATCH, REPEATS = 150, 30  # 150: the cpu preset's evaluation samples, the black-box batch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def best_of(function: Callable[[], object], repeats: int = REPEATS) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)[0]


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_channels_last_against_contiguous():
    torch.manual_seed(0)
    last = SeedCNN().build((1, 28, 28), 10)
    assert last[0].weight.is_contiguous(memory_format=torch.channels_last)
    contiguous = copy.deepcopy(last).to(memory_format=torch.contiguous_format)
    x, y = torch.rand(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    torch.testing.assert_close(forward(last, x), forward(contiguous, x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(input_gradient(last, x, y), input_gradient(contiguous, x, y),
                               rtol=1e-4, atol=1e-6)
    optimizers = {id(m): torch.optim.SGD(m.parameters(), lr=0.0) for m in (last, contiguous)}
    passes = {
        "forward (no grad)": lambda m: forward(m, x),
        "input gradient": lambda m: input_gradient(m, x, y),
        "training step": lambda m: training_step(m, optimizers[id(m)], x, y),
    }
    print(f"\n[bench_layout] seed CNN, batch {BATCH}, CPU, {torch.get_num_threads()} threads "
          f"(minimum of {REPEATS})")
    for name, run in passes.items():
        times = {"contiguous": float("inf"), "channels-last": float("inf")}
        for _ in range(3):  # interleaved rounds
            for layout, model in (("contiguous", contiguous), ("channels-last", last)):
                times[layout] = min(times[layout], best_of(functools.partial(run, model)))
        print(f"[bench_layout] {name:18s} contiguous {times['contiguous'] * 1e3:6.1f} ms  "
              f"channels-last {times['channels-last'] * 1e3:6.1f} ms  speed-up "
              f"{times['contiguous'] / times['channels-last']:.2f}x")
