"""Plugin discovery through real entry points of a fake installed distribution."""

from __future__ import annotations

import pytest
from support.plugins import install_fake_distribution

from advbench import PluginLoadError, UsageError, load_registry


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install (on sys.path) a distribution 'fakeplug' declaring one entry point per module."""
    return install_fake_distribution(tmp_path, monkeypatch)


def test_builtins_come_through_entry_points(registry):
    assert {"fgsm", "fgm"} <= set(registry.names("attack"))
    assert registry.get("attack", "fgsm").source.distribution == "advbench"
    assert registry.get("defense", "none").source.plugin == "none"
    assert "fashion-mnist" in registry.names("dataset")
    assert registry.failures == []


def test_third_party_plugins_load_and_failures_are_isolated(fake_distribution):
    registry = load_registry(autoload=True)
    noop = registry.get("attack", "noop")
    assert (noop.source.distribution, noop.source.version) == ("fakeplug", "1.2.3")
    errors = {failure.source.plugin: failure.error for failure in registry.failures}
    assert "unobtainium" in errors["broken"]
    assert "duplicate attack name 'fgsm'" in errors["duplicate"]
    assert "advbench" in errors["duplicate"] and "fakeplug" in errors["duplicate"]
    assert "bench_atacks" in errors["misspelled"]
    assert "not a subclass of Defense" in errors["wrong_type"]
    assert registry.get("attack", "fgsm").source.distribution == "advbench"


def test_strict_mode_makes_a_failure_fatal(fake_distribution):
    with pytest.raises(PluginLoadError, match="unobtainium"):
        load_registry(autoload=True, strict=True)


def test_unknown_name_suggests_the_closest(registry):
    with pytest.raises(UsageError, match="did you mean 'fgsm'") as info:
        registry.resolve("attack", "fgsn")
    available = str(info.value).split("Available: ")[1].split(", ")
    assert available == registry.names("attack")


def test_all_is_sorted_and_lists_are_deduplicated(registry):
    names = [entry.name for entry in registry.resolve("attack", "all")]
    assert names == sorted(names)
    assert [e.name for e in registry.resolve("attack", "fgsm, fgm,fgsm")] == ["fgsm", "fgm"]
