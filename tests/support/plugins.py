"""Helpers of tests/unit/test_plugins.py and tests/e2e/test_plugins_e2e.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

MODULES = {
    "fake_good": """
        from dataclasses import dataclass
        from advbench import Attack, hookimpl

        @dataclass(kw_only=True)
        class Noop(Attack):
            name = "noop"
            norms = ("linf",)
            def run(self, oracle, x, y, threat, ctx):
                return x

        @hookimpl
        def bench_attacks():
            return [Noop]
    """,
    "fake_broken": "raise ImportError('missing dependency: unobtainium')",
    "fake_duplicate": """
        from advbench import Attack, hookimpl

        class AnotherFGSM(Attack):
            name = "fgsm"
            norms = ("linf",)

        @hookimpl
        def bench_attacks():
            return [AnotherFGSM]
    """,
    "fake_misspelled": """
        from advbench import hookimpl

        @hookimpl
        def bench_atacks():
            return []
    """,
    "fake_wrong_type": """
        from advbench import hookimpl

        @hookimpl
        def bench_defenses():
            return [int]
    """,
}


def install_fake_distribution(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install (on sys.path) a distribution 'fakeplug' declaring one entry point per module."""
    for name, source in MODULES.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    info = folder / "fakeplug-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.2.3\n")
    lines = "\n".join(f"{name.removeprefix('fake_')} = {name}" for name in MODULES)
    (info / "entry_points.txt").write_text(f"[advbench.plugins]\n{lines}\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder
