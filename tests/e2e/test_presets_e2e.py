"""Plugins size themselves per preset; the core names no built-in plugin."""

from __future__ import annotations

import pytest
from support.presets import built_in_names

from advbench.plugin_system.loader import load_registry
from advbench.plugin_system.presets import PRESETS


@pytest.fixture(scope="module")
def registry():
    """The built-in plugins only (a third party's may size itself as it likes)."""
    loaded = load_registry(autoload=False)
    for kind in ("attack", "defense"):
        loaded.entries[kind] = {name: entry for name, entry in loaded.entries[kind].items()
                                if entry.source.plugin in built_in_names()}
    return loaded


def test_set_overrides_a_preset_argument(registry):
    """``--set`` on an argument the preset also sizes: the user's value wins (it used to be
    passed twice and refused as a usage error)."""
    import dataclasses

    from advbench.running.plan import RunConfig, build_plan

    plan = build_plan(RunConfig(attacks="fgsm", defenses="none", preset="paper"), registry)
    entry = dataclasses.replace(registry.get("attack", "apgd-ce"), arguments=(("iterations", 7),))
    assert PRESETS["paper"].options_for(entry.cls) == {"iterations": 100, "restarts": 5}
    built = plan.build(entry)
    assert (built.iterations, built.restarts) == (7, 5)
