"""Served defenses (#29): a third-party defense that wraps its model runs its ``wrap`` in a model
server; the harness attacks a stand-in that queries it, and grades it as it would in-process.

Each module is written to ``tmp_path`` and loaded through ``BENCH_PLUGINS``, as a third party's
would be.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

import advbench.gate
from advbench import load_registry, run_matrix
from advbench.plugin_system.declared import DeclaredDefense
from advbench.running import served

SMALL = dict(preset="smoke", n_train=1000, n_eval=30, eps={"linf": [0.1], "l2": [1.0]},
             cascade=False)

WRAPS = '''
from dataclasses import dataclass

import torch
from torch import nn

import advbench.gate
from advbench import Defense, hookimpl
from advbench_plugins.gaussian_smoothing import GaussianSmoothing

CHEAT = True


def cheat():
    if CHEAT:
        advbench.gate.check_adversarial = lambda *args, **kwargs: None


class Noisy(nn.Module):
    """Gaussian noise on the input, drawn from the global random stream."""

    def __init__(self, model, sigma):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        cheat()
        return self.model(x + self.sigma * torch.randn_like(x))


@dataclass(kw_only=True)
class GlobalNoise(Defense):
    name = "global-noise"
    randomized = True
    sigma: float = 0.1

    def wrap(self, model):
        return Noisy(model, self.sigma)


@dataclass(kw_only=True)
class MySmoothing(GaussianSmoothing):
    name = "my-smoothing"
    presets = {"smoke": {"n0": 10, "n": 20, "m": 2}}


@dataclass(kw_only=True)
class WrapRaises(Defense):
    name = "wrap-raises"

    def wrap(self, model):
        raise RuntimeError("no wrapper today")


class ExitsOnGradient(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if torch.is_grad_enabled():
            import os
            os._exit(3)
        return self.model(x)


@dataclass(kw_only=True)
class DiesInCell(Defense):
    name = "dies-in-cell"

    def wrap(self, model):
        return ExitsOnGradient(model)


@hookimpl
def bench_defenses():
    return [GlobalNoise, MySmoothing, WrapRaises, DiesInCell]
'''


def test_a_wrapping_defense_is_served_and_graded_as_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wraps.py").write_text(textwrap.dedent(WRAPS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BENCH_PLUGINS", "wraps")
    gate = advbench.gate.check_adversarial
    registry = load_registry()
    assert issubclass(registry.get("defense", "my-smoothing").cls, DeclaredDefense)
    frame = run_matrix(attacks="fgsm,fgm", registry=registry, cache_dir=tmp_path / "cache",
                       defenses="global-noise,my-smoothing,wrap-raises,dies-in-cell", **SMALL)
    assert "wraps" not in sys.modules and advbench.gate.check_adversarial is gate
    rows = frame.set_index(["defense", "attack"])
    assert set(rows.loc[["global-noise", "my-smoothing"], "status"]) == {"ok"}
    assert rows.loc[("my-smoothing", "fgm"), "certifier"] == "randomized-smoothing"
    assert set(rows.loc["wrap-raises", "invalid_reason"]) == {
        "defense failed: wrap() raised RuntimeError: no wrapper today"}
    assert set(rows.loc["dies-in-cell", "status"]) == {"error"}  # its server died in a cell
    assert set(rows.loc["dies-in-cell", "invalid_reason"]) == {
        "the defense's model server exited with code 3"}
    # the real classes in this process (their cheat off) grade the same numbers
    try:
        registry = load_registry(catalog=False)
        sys.modules["wraps"].CHEAT = False
        real = run_matrix(attacks="fgsm,fgm", registry=registry, cache_dir=tmp_path / "cache2",
                          defenses="global-noise,my-smoothing", **SMALL)
    finally:
        sys.modules.pop("wraps", None)
        advbench.gate.check_adversarial = gate
    theirs = real.set_index(["defense", "attack", "cell_key"]).sort_index()
    mine = frame.set_index(["defense", "attack", "cell_key"]).loc[theirs.index]
    for column in ("clean_accuracy", "robust_accuracy", "certified_accuracy", "queries_mean"):
        assert mine[column].fillna(-1).tolist() == theirs[column].fillna(-1).tolist(), column


DOUBLING = '''
from dataclasses import dataclass
from torch import nn
from advbench import Defense


class Twice(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return 2 * self.model(x)


@dataclass(kw_only=True)
class Doubling(Defense):
    name = "doubling"

    def wrap(self, model):
        return Twice(model)
'''


def test_a_served_classifier_differentiates_in_its_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward, backward, no_grad, an empty parameter for the device; the identity is not
    served; a server that is gone fails every later request with the same reason."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    server = served.ModelServer({"module": "advbench_plugins.none", "qualname": "NoDefense"},
                                {}, model)
    assert server.identity
    server.close()
    (tmp_path / "doubling.py").write_text(DOUBLING)
    monkeypatch.syspath_prepend(str(tmp_path))
    server = served.ModelServer({"module": "doubling", "qualname": "Doubling"}, {}, model)
    classifier = served.served(server, "model")
    x = torch.rand(4, 3, 2, 2, requires_grad=True)
    out, expected = classifier(x), 2 * model(x)
    assert torch.allclose(out, expected)
    (mine,) = torch.autograd.grad(out.square().sum(), x)
    (theirs,) = torch.autograd.grad(expected.square().sum(), x)
    assert torch.allclose(mine, theirs)
    with torch.no_grad():
        assert torch.allclose(classifier(x), expected)
    plain = x.detach()
    assert torch.allclose(torch.func.grad(lambda z: classifier(z).square().sum())(plain),
                          torch.func.grad(lambda z: (2 * model(z)).square().sum())(plain))
    with pytest.raises(served.ServeFailed, match="torch.func.vmap"):
        torch.func.vmap(classifier)(plain.unsqueeze(1))
    (once,) = torch.autograd.grad(classifier(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        once.sum().backward()
    assert [p.numel() for p in classifier.parameters()] == [0]
    assert "doubling" not in sys.modules
    server.process.kill()
    server.process.wait()
    for _ in range(2):
        with pytest.raises(served.ServeFailed, match="killed by signal SIGKILL"):
            classifier(x)
