"""Plugins size themselves per preset; the core names no built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support.presets import ROOT, built_in_names

from advbench.plugin_system.loader import load_registry
from advbench.plugin_system.presets import PRESETS

# The sizing presets.py held before plugins declared their own (copied from it): every preset's
# configs must stay what they were, or the published leaderboard's run no longer reproduces
# (the paper preset's apgd-ce changed on purpose, with the leaderboard rerun: 50 -> 100 × 5).
EXPECTED_EPOCHS = {
    "smoke": {},
    # cpu trains on half the split (#25): none, smoothing and certified training double their
    # epochs to keep their steps; adversarial training keeps one epoch (half its steps).
    "cpu": {"adv-train-fgsm": 1, "adv-train-pgd": 1, "certified-training": 2,
            "gaussian-smoothing": 4, "none": 6},
    "paper": {"adv-train-fgsm": 5, "adv-train-pgd": 10, "certified-training": 5},
}
SMOKE_APGD = {"apgd-ce": {"iterations": 20}, "apgd-dlr": {"iterations": 10},
              "apgd-t": {"iterations": 10, "target_classes": 3}}
# The cpu preset cascades (#25): AutoAttack's APGD-CE 100 and APGD-T 100 × 9 run only on the
# samples cheaper attacks left, and stop on each sample they fool.
CPU_APGD = {"apgd-ce": {"iterations": 100}, "apgd-dlr": {"iterations": 10},
            "apgd-t": {"iterations": 100, "target_classes": 9}}
# The ART adapter's CPU sizing (its first version's): ART's defaults take hours on a CPU.
ART = {
    "smoke": {"art-cw-l2": {"binary_search_steps": 3, "initial_const": 1.0},
              "art-deepfool": {"max_iter": 20},
              "art-elastic-net": {"max_iter": 20, "binary_search_steps": 3, "initial_const": 1.0},
              "art-hopskipjump": {"max_iter": 5, "max_eval": 500},
              "art-boundary": {"max_iter": 100}},
    "cpu": {"art-cw-l2": {"binary_search_steps": 5, "initial_const": 1.0},
            "art-deepfool": {"max_iter": 50},
            "art-elastic-net": {"max_iter": 50, "binary_search_steps": 5, "initial_const": 1.0},
            "art-hopskipjump": {"max_iter": 10, "max_eval": 1000},
            "art-boundary": {"max_iter": 500}},
}
# FAB (fab-linf, fab-l2, fab-t) and FMN (fmn-linf, fmn-l2, fmn-l1, fmn-l0), as their plugins
# size them.
FAB = {
    "smoke": {"fab-linf": {"iterations": 10}, "fab-l2": {"iterations": 10},
              "fab-t": {"iterations": 10, "target_classes": 3},
              "fmn-linf": {"iterations": 10}, "fmn-l2": {"iterations": 10},
              "fmn-l1": {"iterations": 10}, "fmn-l0": {"iterations": 10}},
    "cpu": {"fab-linf": {"iterations": 20}, "fab-l2": {"iterations": 20},
            "fab-t": {"iterations": 100, "target_classes": 3},
            **{name: {"iterations": 50, "target_classes": 3, "gamma": 0.3}
               for name in ("fmn-linf", "fmn-l2", "fmn-l1", "fmn-l0")}},
    "paper": {"fab-linf": {"iterations": 100}, "fab-l2": {"iterations": 100},
              "fab-t": {"iterations": 100, "target_classes": 9},
              "fmn-linf": {"iterations": 100}, "fmn-l2": {"iterations": 100},
              "fmn-l1": {"iterations": 100}, "fmn-l0": {"iterations": 100}},
}
EXPECTED_OPTIONS = {
    "smoke": {**SMOKE_APGD, **ART["smoke"], **FAB["smoke"]},
    "cpu": {"gaussian-smoothing": {"n": 100, "m": 2}, "pixel-scan": {"values": (1.0,)},
            **CPU_APGD, **ART["cpu"], **FAB["cpu"]},
    "paper": {"adv-train-pgd": {"clean_fraction": 0.3},
              "apgd-ce": {"iterations": 100, "restarts": 5}, "apgd-dlr": {"iterations": 50},
              "apgd-t": {"iterations": 100, "target_classes": 9}, **FAB["paper"]},
}
# The run's defaults (RunConfig, the CLI, evaluate_model) name the baseline plugins; "none" is
# also an ordinary word there (``reduction="none"``, CSP's ``'none'``).
ALLOWED = {"fashion-mnist", "seed-cnn", "none"}


@pytest.fixture(scope="module")
def registry():
    """The built-in plugins only (a third party's may size itself as it likes)."""
    loaded = load_registry(autoload=False)
    for kind in ("attack", "defense"):
        loaded.entries[kind] = {name: entry for name, entry in loaded.entries[kind].items()
                                if entry.source.plugin in built_in_names()}
    return loaded


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_built_in_sizes_itself_as_the_presets_did(preset, registry):
    sizing = PRESETS[preset]
    for kind in ("attack", "defense"):
        for name, entry in registry.entries[kind].items():
            expected = EXPECTED_OPTIONS[preset].get(name, {})
            assert sizing.options_for(entry.cls) == expected, (preset, name)
    for name, entry in registry.entries["defense"].items():
        expected = EXPECTED_EPOCHS[preset].get(name, sizing.epochs)
        assert sizing.epochs_for(entry.cls) == expected, (preset, name)
    assert {"apgd-t", "pixel-scan", "gaussian-smoothing", "adv-train-pgd"} <= {
        name for kind in ("attack", "defense") for name in registry.entries[kind]}


def test_a_third_party_plugin_declares_its_own_cost():
    from advbench import Defense

    class Costly(Defense):
        name = "costly"
        presets = {"cpu": {"width": 4}}
        preset_epochs = {"cpu": 1}

    assert PRESETS["cpu"].options_for(Costly) == {"width": 4}
    assert PRESETS["cpu"].epochs_for(Costly) == 1
    assert PRESETS["paper"].options_for(Costly) == {}
    assert PRESETS["paper"].epochs_for(Costly) == PRESETS["paper"].epochs


def string_constants(path: Path) -> set[str]:
    """Every string literal of the module but its docstrings (examples may name plugins)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings}


def test_the_core_names_no_built_in_plugin():
    names = built_in_names() - ALLOWED
    assert {"apgd-ce", "gaussian-smoothing", "pixel-scan"} <= names
    found = {f"{path.relative_to(ROOT)}: {value!r}"
             for path in sorted((ROOT / "benchmark").rglob("*.py"))
             for value in string_constants(path) if value in names}
    assert not found, f"the core names built-in plugins: {sorted(found)}"
