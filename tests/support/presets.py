"""Helpers of tests/unit/test_presets.py and tests/e2e/test_presets_e2e.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def built_in_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(project["project"]["entry-points"]["advbench.plugins"])
