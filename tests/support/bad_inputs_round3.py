"""Helpers of tests/e2e/test_bad_inputs_round3.py and tests/unit/test_bad_inputs_round3_unit.py."""

from __future__ import annotations

from pathlib import Path

SMALL = ["--n-train", "500", "--n-eval", "20"]


LONG = "a" * 300  # one name past the 255 bytes file systems allow (OSError 36)


def plugin_module(tmp_path: Path, monkeypatch, name: str, body: str) -> str:
    """A plugin module ``name`` on the import path, loaded through BENCH_PLUGINS."""
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BENCH_PLUGINS", name)
    return name
