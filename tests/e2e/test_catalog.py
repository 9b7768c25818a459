"""The plugin catalog (#29): a third-party module that registers only attacks never runs in the
harness; its attacks are planned, checked and keyed from their declarations and run isolated.

Each module here is written to ``tmp_path`` and loaded through ``BENCH_PLUGINS``, as a third
party's module would be.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import advbench.gate
from advbench import load_registry, run_matrix
from advbench.errors import UsageError
from advbench.plugin_system import catalog
from advbench.plugin_system.declared import DeclaredAttack, DeclaredDefense
from advbench.plugin_system.options import variants
from advbench.running.plan import RunConfig, build_plan

SMALL = dict(preset="smoke", n_train=3000, n_eval=40, defenses="none", eps={"linf": [0.1]},
             cascade=False)

# An honest attack whose module cheats at import: were it imported in the harness, every
# prediction would be class 0.
CHEATS_AT_IMPORT = '''
from dataclasses import dataclass, field
from typing import Literal

import torch

from advbench import Attack, hookimpl

torch.Tensor.argmax = lambda self, *args, **kwargs: torch.zeros(
    self.shape[0], dtype=torch.long)


@dataclass(kw_only=True)
class SignNoise(Attack):
    """Random sign noise, ``steps`` tries; the budget depends on the arguments."""

    name = "sign-noise"
    norms = ("linf",)
    access = "scores"
    description = "random signs"
    presets = {"smoke": {"steps": 3}}
    steps: int = field(default=5, metadata={"ge": 1})
    mode: Literal["first", "last"] = "last"
    scale: float | None = None

    @property
    def max_queries(self) -> int:
        return 2 * self.steps

    def __post_init__(self) -> None:
        if self.mode == "first" and self.steps > 100:
            raise ValueError("mode first takes at most 100 steps")

    def run(self, oracle, x, y, threat, ctx):
        found = x
        for _ in range(self.steps):
            sign = torch.randint(0, 2, x.shape, generator=ctx.generator).float() * 2 - 1
            candidate = (x + threat.eps * sign).clamp(0, 1)
            oracle.scores(candidate)
            found = found if self.mode == "first" and found is not x else candidate
        return found


@hookimpl
def bench_attacks():
    return [SignNoise]
'''


def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: dict[str, str]) -> None:
    for name, text in sources.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BENCH_PLUGINS", ",".join(sources))


@pytest.fixture
def cheater(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module(tmp_path, monkeypatch, {"cheats_at_import": CHEATS_AT_IMPORT})
    yield
    sys.modules.pop("cheats_at_import", None)


def test_an_attack_only_module_is_declared_not_imported(cheater: None) -> None:
    argmax = torch.Tensor.argmax
    registry = load_registry()
    assert "cheats_at_import" not in sys.modules and torch.Tensor.argmax is argmax
    entry = registry.get("attack", "sign-noise")
    cls = entry.cls
    assert issubclass(cls, DeclaredAttack) and entry.source.plugin == "cheats_at_import"
    assert (cls.norms, cls.access, cls.description, cls.presets) == (
        ("linf",), "scores", "random signs", {"smoke": {"steps": 3}})
    assert [f.name for f in dataclasses.fields(cls)] == ["steps", "mode", "scale"]
    # --set is checked against the declared types and bounds, here
    assert [dict(v.arguments) for v in variants(entry, {"steps": [2, 4]})] == [
        {"steps": 2}, {"steps": 4}]
    for value, message in ((0, "steps must be >= 1"), ("x", "expected an integer")):
        with pytest.raises(UsageError, match=message):
            variants(entry, {"steps": [value]})
    with pytest.raises(UsageError, match="one of 'first', 'last'"):
        variants(entry, {"mode": ["middle"]})
    with pytest.raises(RuntimeError, match="runs in an attack process only"):
        cls().run(None, torch.zeros(1), torch.zeros(1), None, None)


def test_the_real_class_decides_budget_config_and_refusals(cheater: None,
                                                           tmp_path: Path) -> None:
    registry = load_registry()
    plan = build_plan(RunConfig(attacks="sign-noise", options={"sign-noise": {"steps": [4, 7]}},
                                cache_dir=tmp_path / "cache", **SMALL), registry)
    budgets = {entry.name: plan.build(entry).max_queries for entry in plan.attacks}
    assert budgets == {"sign-noise(steps=4)": 8, "sign-noise(steps=7)": 14}
    assert plan.build(plan.attacks[0]).config() == {"steps": 4, "mode": "last", "scale": None}
    with pytest.raises(UsageError, match="mode first takes at most 100 steps"):
        build_plan(RunConfig(attacks="sign-noise", cache_dir=tmp_path / "cache",
                             options={"sign-noise": {"steps": [200], "mode": ["first"]}},
                             **SMALL), registry)
    # an executor's worker gets the class from its declaration, with what was resolved
    again = pickle.loads(pickle.dumps(plan.attacks[1]))
    assert again.cls is plan.attacks[1].cls and plan.build(again).max_queries == 14
    assert "cheats_at_import" not in sys.modules


def test_a_declared_attack_runs_isolated_as_the_real_class_would(cheater: None,
                                                                 tmp_path: Path) -> None:
    declared = run_matrix(attacks="sign-noise,fgsm", cache_dir=tmp_path / "cache",
                          registry=load_registry(), **SMALL)
    assert "cheats_at_import" not in sys.modules
    rows = declared.set_index("attack")
    assert rows.loc["sign-noise", "status"] == "ok" and rows.loc["sign-noise", "grading"] \
        == "isolated" and rows.loc["sign-noise", "query_budget"] == 6  # smoke: 3 steps
    assert rows.loc["fgsm", "robust_accuracy"] < rows.loc["sign-noise", "robust_accuracy"]
    # the real class imported here: its cheat reaches this process (undone before running)
    argmax = torch.Tensor.argmax
    try:
        registry = load_registry(catalog=False)
        assert torch.Tensor.argmax is not argmax  # what the catalog kept out of the harness
    finally:
        torch.Tensor.argmax = argmax
    real = run_matrix(attacks="sign-noise,fgsm", cache_dir=tmp_path / "cache2",
                      registry=registry, **SMALL)
    noise = real.set_index("attack").loc["sign-noise"]
    for column in ("cell_key", "robust_accuracy", "query_budget", "queries_mean"):
        assert noise[column] == rows.loc["sign-noise", column], column


def test_modules_that_kill_or_hang_the_catalog_cost_themselves_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "MODULE_SECONDS", 6.0)  # the hang costs 6 s
    module(tmp_path, monkeypatch, {
        "exits_at_import": "import os\nos._exit(3)\n",
        "hangs_at_import": "import time\ntime.sleep(600)\n",
        "declares_badly": """
            from advbench import Attack, hookimpl

            class Odd(Attack):
                name = "odd"
                norms = ("linf",)
                presets = {"cpu": {"steps": object()}}

            @hookimpl
            def bench_attacks():
                return [Odd]
            """,
        "mixed": """
            from advbench import hookimpl
            from advbench_plugins.fgsm import FGSM
            from advbench_plugins.seed_cnn import SeedCNN

            class MyFGSM(FGSM):
                name = "my-fgsm"

            class MyCNN(SeedCNN):  # a model runs in the harness
                name = "my-cnn"

            @hookimpl
            def bench_attacks():
                return [MyFGSM]

            @hookimpl
            def bench_models():
                return [MyCNN]
            """,
        "cheats_at_import": CHEATS_AT_IMPORT})
    registry = load_registry()
    failures = {f.source.plugin: f.error for f in registry.failures}
    assert failures["exits_at_import"] == "it ended the plugin catalog process (exited with code 3)"
    assert "hung the plugin catalog process" in failures["hangs_at_import"]
    assert "not plain" in failures["declares_badly"]
    # a module that registers a model runs here, as before; the next ones load
    assert "mixed" in sys.modules and registry.get("model", "my-cnn")
    assert not issubclass(registry.get("attack", "my-fgsm").cls, DeclaredAttack)
    assert issubclass(registry.get("attack", "sign-noise").cls, DeclaredAttack)
    sys.modules.pop("mixed", None)


# A defense that only trains; during training it rebinds the harness's gate (when CHEAT).
TRAINS_ONLY = '''
from dataclasses import dataclass, field

import torch
from torch import nn

import advbench.gate
from advbench import Defense, hookimpl

CHEAT = True


@dataclass(kw_only=True)
class NoisyTraining(Defense):
    name = "noisy-training"
    description = "uniform noise on the training inputs"
    preset_epochs = {"smoke": 1}
    sigma: float = field(default=0.1, metadata={"ge": 0})

    def training_loss(self, model, x, y, progress):
        if CHEAT:
            advbench.gate.check_adversarial = lambda *args, **kwargs: None
        noise = torch.rand(x.shape, generator=self.context.generator, device=x.device)
        return nn.functional.cross_entropy(model((x + self.sigma * (2 * noise - 1)).clamp(0, 1)),
                                           y)


@dataclass(kw_only=True)
class RaisesInFit(Defense):
    name = "raises-in-fit"

    def fit(self, model, train, ctx):
        raise RuntimeError("no data for me")


@dataclass(kw_only=True)
class ExitsInFit(Defense):
    name = "exits-in-fit"

    def fit(self, model, train, ctx):
        import os
        os._exit(3)


@hookimpl
def bench_defenses():
    return [NoisyTraining, RaisesInFit, ExitsInFit]
'''
SMALL_DEFENSES = {k: v for k, v in SMALL.items() if k != "defenses"}


def test_a_defense_that_only_trains_trains_in_a_process_of_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module(tmp_path, monkeypatch, {"trains_only": TRAINS_ONLY})
    gate = advbench.gate.check_adversarial
    registry = load_registry()
    assert issubclass(registry.get("defense", "noisy-training").cls, DeclaredDefense)
    frame = run_matrix(attacks="fgsm", registry=registry, cache_dir=tmp_path / "cache",
                       defenses="noisy-training,raises-in-fit,exits-in-fit", **SMALL_DEFENSES)
    assert "trains_only" not in sys.modules and advbench.gate.check_adversarial is gate
    rows = frame.set_index(["defense", "attack"])
    assert rows.loc[("noisy-training", "fgsm"), "status"] == "ok"
    assert "fit raised RuntimeError: no data for me" in rows.loc[("raises-in-fit", "fgsm"),
                                                                 "invalid_reason"]
    assert "training process exited with code 3" in rows.loc[("exits-in-fit", "fgsm"),
                                                             "invalid_reason"]
    # the real class trained here (its cheat off) trains the same model: the same rows
    try:
        registry = load_registry(catalog=False)
        sys.modules["trains_only"].CHEAT = False
        real = run_matrix(attacks="fgsm", registry=registry, cache_dir=tmp_path / "cache2",
                          defenses="noisy-training", **SMALL_DEFENSES)
    finally:
        sys.modules.pop("trains_only", None)
        advbench.gate.check_adversarial = gate
    mine = rows.loc["noisy-training"]
    theirs = real.set_index(["defense", "attack"]).loc["noisy-training"]
    for column in ("cell_key", "clean_accuracy", "robust_accuracy"):
        assert list(mine[column]) == list(theirs[column]), column
