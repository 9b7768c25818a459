"""The example third-party package (examples/bench-example-plugin) keeps working, without pip:
its modules are imported from the source folder, registered and run through the kit."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from advbench import load_registry
from advbench.conformance import check_attack, check_defense

SOURCE = Path(__file__).resolve().parents[2] / "examples" / "bench-example-plugin"
MODULES = ("bench_example_plugin.gaussian_noise", "bench_example_plugin.input_quantization")


@pytest.fixture(scope="module")
def example_modules():
    """The example's plugin modules, from the source folder even when a copy is installed."""
    sys.path.insert(0, str(SOURCE))
    try:
        for name in [*MODULES, "bench_example_plugin"]:
            sys.modules.pop(name, None)
        modules = [importlib.import_module(name) for name in MODULES]
    finally:
        sys.path.remove(str(SOURCE))
    assert all(Path(module.__file__).is_relative_to(SOURCE) for module in modules)
    return modules


@pytest.fixture(scope="module")
def example_registry(example_modules):
    return load_registry(extra=example_modules)


def test_the_hooks_register_one_attack_and_one_defense(example_registry):
    assert example_registry.failures == []
    attack = example_registry.get("attack", "gaussian-noise")
    defense = example_registry.get("defense", "input-quantization")
    assert attack.source.plugin == "bench_example_plugin.gaussian_noise"
    assert defense.source.plugin == "bench_example_plugin.input_quantization"
    assert attack.capabilities() == {"norms": ["linf", "l2"], "access": "decision",
                                     "targeted": True, "randomized": True}
    assert "gaussian-noise" in [e.name for e in example_registry.resolve("attack", "all")]


def test_the_example_attack_passes_the_kit(example_registry):
    check_attack(example_registry.get("attack", "gaussian-noise").cls)


def test_the_example_defense_passes_the_kit(example_registry):
    check_defense(example_registry.get("defense", "input-quantization").cls)


def test_the_package_declares_both_entry_points():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((SOURCE / "pyproject.toml").read_text())["project"]
    assert project["name"] == "bench-example-plugin" and "advbench" in project["dependencies"]
    assert project["entry-points"]["advbench.plugins"] == {
        "gaussian-noise": MODULES[0], "input-quantization": MODULES[1],
        "trades": "bench_example_plugin.trades"}
