"""Cheap hardening that holds in-process (#29 item 4): a third-party attack that overrides the
gate is refused at registration, one that returns a tensor subclass is graded on its plain data,
one that calls ``sys.exit`` ends its own cell only. Each cheat comes as a plugin object, as a
third party's module would."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch
from support.hostile_plugins import SubclassReturn

from advbench import Attack, GateResult, hookimpl, load_registry, run_matrix

SMALL = dict(preset="smoke", n_train=3000, n_eval=40, defenses="none", eps={"linf": [0.1]},
             cascade=False)


class Hostile(Attack):
    norms = ("linf",)


@dataclass(kw_only=True)
class BlankPerturb(Hostile):
    """Replaces the gate: blank images, graded as valid by itself."""

    name = "blank-perturb"

    def run(self, oracle, x, y, threat, ctx):
        return torch.zeros_like(x)

    def perturb(self, oracle, x, y, threat, ctx):  # type: ignore[misc]
        return GateResult(torch.zeros_like(x))


@dataclass(kw_only=True)
class Exits(Hostile):
    name = "exits"

    def run(self, oracle, x, y, threat, ctx):
        sys.exit(0)


def third_party(*classes: type[Attack]) -> types.SimpleNamespace:
    """A plugin object as a third party's module would be: one ``bench_attacks`` hook."""
    return types.SimpleNamespace(bench_attacks=hookimpl(lambda: list(classes)))


def test_an_attack_that_overrides_perturb_is_refused_at_registration():
    registry = load_registry(extra=[third_party(BlankPerturb, Exits)])
    assert "blank-perturb" not in registry.entries["attack"]
    assert "exits" in registry.entries["attack"]  # the rest of the plugin still loads
    assert any("overrides Attack.perturb" in failure.error for failure in registry.failures)


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    registry = load_registry(extra=[third_party(SubclassReturn, Exits)])
    return run_matrix(attacks="h-subclass,exits,fgsm", registry=registry,
                      out=root / "run", cache_dir=root / "cache", **SMALL).set_index("attack")


def test_a_tensor_subclass_is_graded_on_its_plain_data(frame):
    """Its data is x moved by 0.001: robust accuracy is about the clean accuracy (the subclass's
    argmax, one class off, would have made it 0)."""
    row = frame.loc["h-subclass"]
    assert row["status"] == "ok" and row["clean_accuracy"] > 0.3
    assert row["robust_accuracy"] >= row["clean_accuracy"] - 0.05


def test_sys_exit_in_an_attack_ends_its_cell_only(frame):
    row = frame.loc["exits"]
    assert row["status"] == "error" and row["invalid_reason"] == "attack called sys.exit(0)"
    assert frame.loc["fgsm", "status"] == "ok"
