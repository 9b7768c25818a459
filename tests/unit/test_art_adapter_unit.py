"""The ART adapter: every adapted attack runs a gated cell, pays for each model call through the
oracle, keeps to its access level, is reproducible from its seed, and is absent without ART."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

pytest.importorskip("art", reason="the ART adapter's tests need adversarial-robustness-toolbox")

import art
from support.art_adapter import BY_NAME, FAST

import advbench_plugins.art_adapter as aa
from advbench import AccessError, AttackContext, Oracle, ThreatModel
from advbench.errors import UsageError
from advbench.plugin_system.loader import load_registry
from advbench.plugin_system.options import arguments_of, checked_value


def test_every_spec_is_registered_through_the_entry_point(registry):
    for cls in aa.ADAPTED:
        entry = registry.get("attack", cls.name)
        assert entry.source.plugin == "art-adapter"
        assert entry.source.distribution == "advbench"
        assert cls().config()["upstream"] == f"art.{cls.spec.upstream} {art.__version__}"
    assert sorted(BY_NAME) == sorted(FAST)


def test_missing_art_is_one_line_in_the_listing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "art", None)  # import art now fails
    monkeypatch.delitem(sys.modules, "advbench_plugins.art_adapter")
    registry = load_registry()
    assert registry.failures == []  # a missing optional dependency is no failure
    missing = {f.source.plugin: f.error for f in registry.unavailable}
    message = "the art-* attacks need ART: pip install 'advbench[art]'"
    assert missing.get("art-adapter") == message
    assert not [name for name in registry.names("attack") if name.startswith("art-")]
    assert "fgsm" in registry.names("attack")
    from advbench.cli import main
    assert main(["list"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"unavailable art-adapter: {message}" in out
    assert "art-cw-l2" not in out
    with pytest.raises(ImportError, match=r"advbench\[art\]"):
        importlib.import_module("advbench_plugins.art_adapter")


def test_access_levels_hold(tiny):
    net, x, y = tiny
    with pytest.raises(AccessError):  # a white-box attack under a score-only oracle fails
        BY_NAME["art-deepfool"](max_iter=2).run(Oracle(net, "scores", len(y)), x, y,
                                                ThreatModel("l2", 1.0),
                                                AttackContext(torch.Generator().manual_seed(0)))
    assert {cls.name: cls.access for cls in aa.ADAPTED} == {
        "art-cw-l2": "gradient", "art-deepfool": "gradient", "art-elastic-net": "gradient",
        "art-square": "scores", "art-hopskipjump": "decision", "art-boundary": "decision"}


def test_arguments_are_arts_and_typed():
    assert checked_value(BY_NAME["art-cw-l2"], "confidence", 1) == 1.0
    assert checked_value(BY_NAME["art-square"], "max_iter", 300) == 300
    with pytest.raises(UsageError, match="art-elastic-net.decision_rule"):
        checked_value(BY_NAME["art-elastic-net"], "decision_rule", "L3")
    with pytest.raises(UsageError, match="art-deepfool.max_iter"):
        checked_value(BY_NAME["art-deepfool"], "max_iter", -1)
    for harness in ("eps", "norm", "targeted", "batch_size", "verbose"):
        assert harness not in arguments_of(BY_NAME["art-square"])
    assert BY_NAME["art-cw-l2"]().binary_search_steps == 10  # ART's default
    assert BY_NAME["art-boundary"].presets["cpu"] == {"max_iter": 500}
