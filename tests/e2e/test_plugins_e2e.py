"""Plugin discovery through real entry points of a fake installed distribution."""

from __future__ import annotations

import pytest
from support.plugins import install_fake_distribution

from advbench import load_registry
from advbench.cli import main


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install (on sys.path) a distribution 'fakeplug' declaring one entry point per module."""
    return install_fake_distribution(tmp_path, monkeypatch)


def test_strict_plugins_flag_stops_a_run_in_one_line(fake_distribution, monkeypatch, tmp_path,
                                                   capsys):
    """``bench run --strict-plugins`` with a broken plugin: exit 2, one line, nothing written."""
    monkeypatch.setenv("BENCH_PLUGINS", "fake_broken")
    out = tmp_path / "out"
    code = main(["run", "--strict-plugins", "--preset", "smoke", "--attacks", "fgsm",
                 "--defenses", "none", "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("bench: error:") and "\n" not in err
    assert "fake_broken" in err and "unobtainium" in err
    assert not out.exists()


def test_autoload_can_be_disabled(fake_distribution, monkeypatch):
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_registry()
    assert "noop" not in registry.names("attack") and registry.failures == []
    monkeypatch.setenv("BENCH_PLUGINS", "fake_good")
    assert "noop" in load_registry().names("attack")
