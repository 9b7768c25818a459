"""Where a run's time goes: the model's own passes, the plugins' own code, and the harness.

    python -m pytest benchmarks/bench_overhead.py -o python_files='bench_*.py' --benchmark-enable -s

A real ``bench run`` in this process (local executor, a fresh cache folder): bench's ten attacks at
the cpu preset's sizes (150 evaluation samples) against ``none`` and ``adv-train-fgsm``, trained on
10 000 images (``BENCH_OVERHEAD_FULL=1``: every defense on the whole split). While it runs,
the time is split three ways by timers around:
- the model: every outermost ``nn.Module`` call (forward), every ``torch.autograd.grad`` and
  ``backward`` (backward) and every optimizer step, whoever makes them (the harness's own
  predictions count here too: they are model passes);
- the plugins' own code: each attack's ``run`` and each defense's ``fit``, less the model time
  spent inside them (an attack's proposals and projections, a training loop's batching);
- the harness: everything else (data, planning, the gate, the seal's hashes, query counting,
  caches, pictures, figures, writing). The issue's goal: at most 5 % of the run.
The shares come from one run, so the machine's noise moves all three together.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.optim.optimizer as optimizer_hooks

from advbench import load_registry
from advbench.cli import main

# bench's ten built-in attacks (``all`` would add the torchattacks adapter's where installed)
ATTACKS = "fgsm,fgm,pgd-linf,pgd-l2,apgd-ce,apgd-dlr,apgd-t,random-search,one-pixel,pixel-scan"
DEFENSES = "none,adv-train-fgsm"
# BENCH_OVERHEAD_FULL=1: the whole default matrix instead (every defense, the full training
# split: about 7 minutes), the size the README's first line runs at
FULL = os.environ.get("BENCH_OVERHEAD_FULL") == "1"


class Clock:
    """Seconds spent in model passes, in total and while inside plugin code."""

    def __init__(self) -> None:
        self.model = 0.0
        self.plugin = 0.0  # wall time inside attack.run / defense.fit, model passes included
        self.model_in_plugin = 0.0
        self.depth = 0  # nesting of module calls: only the outermost is timed
        self.started = 0.0
        self.in_plugin = 0

    def add_model(self, seconds: float) -> None:
        self.model += seconds
        if self.in_plugin:
            self.model_in_plugin += seconds

    def pre_forward(self, module: torch.nn.Module, args: Any) -> None:
        if self.depth == 0:
            self.started = time.perf_counter()
        self.depth += 1

    def post_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.add_model(time.perf_counter() - self.started)

    def timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with its wall time counted as model time."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add_model(time.perf_counter() - start)
        return wrapper

    def plugin_call(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """A plugin method with its wall time counted as plugin time."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            self.in_plugin += 1
            try:
                return function(*args, **kwargs)
            finally:
                self.in_plugin -= 1
                if not self.in_plugin:
                    self.plugin += time.perf_counter() - start
        return wrapper


@contextmanager
def clocked(monkeypatch) -> Iterator[Clock]:
    """Timers on every model pass and every built-in plugin's ``run`` / ``fit``."""
    clock = Clock()
    module_hooks = torch.nn.modules.module
    handles = [module_hooks.register_module_forward_pre_hook(clock.pre_forward),
               module_hooks.register_module_forward_hook(clock.post_forward)]
    monkeypatch.setattr(torch.autograd, "grad", clock.timed(torch.autograd.grad))
    monkeypatch.setattr(torch.autograd, "backward", clock.timed(torch.autograd.backward))
    steps: dict[int, float] = {}
    handles.append(optimizer_hooks.register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: steps.__setitem__(id(optimizer), time.perf_counter())))
    handles.append(optimizer_hooks.register_optimizer_step_post_hook(
        lambda optimizer, args, kwargs: clock.add_model(
            time.perf_counter() - steps.pop(id(optimizer)))))
    registry = load_registry()
    for kind, method in (("attack", "run"), ("defense", "fit")):
        owners = {next(c for c in entry.cls.__mro__ if method in vars(c))
                  for entry in registry.entries[kind].values()}
        for owner in owners:  # nested calls (super().run) count once: see plugin_call
            monkeypatch.setattr(owner, method, clock.plugin_call(vars(owner)[method]))
    try:
        yield clock
    finally:
        for handle in handles:
            handle.remove()


def test_harness_share_of_a_run(tmp_path, monkeypatch):
    size = ["--defenses", "all"] if FULL else ["--defenses", DEFENSES, "--n-train", "10000"]
    argv = ["run", "--attacks", ATTACKS, *size, "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--executor", "local"]
    with clocked(monkeypatch) as clock:
        start = time.perf_counter()
        code = main(argv)
        total = time.perf_counter() - start
    assert code == 0
    plugin_own = clock.plugin - clock.model_in_plugin
    harness = total - clock.model - plugin_own
    print(f"\n[bench_overhead] bench {' '.join(argv[:6])} ... (cpu preset, 150 samples, "
          f"{torch.get_num_threads()} threads): {total:.1f} s")
    for name, seconds in (("model passes (forward, backward, optimizer)", clock.model),
                          ("plugins' own code (attack.run, defense.fit)", plugin_own),
                          ("harness (everything else)", harness)):
        print(f"[bench_overhead] {name:45s} {seconds:7.1f} s  {seconds / total:6.1%}")
    phases = json.loads((tmp_path / "run" / "manifest.json").read_text())["phases"]
    print("[bench_overhead] the run's phases (manifest): " + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in phases.items()
        if isinstance(seconds, float | int)))
    print("[bench_overhead] goal: harness at most 5 % of the run")
