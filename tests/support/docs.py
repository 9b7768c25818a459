"""Helpers of tests/unit/test_docs.py and tests/e2e/test_docs_e2e.py."""

from __future__ import annotations

import importlib
import re
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


GUIDES = [ROOT / "docs" / name
          for name in ("writing-plugins.md", "bad-inputs.md", "scaling.md", "measurements.md")]


EXAMPLE = ROOT / "examples" / "bench-example-plugin"


FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


MARK = re.compile(r"<!--\s*([\w-]+):\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    language: str
    code: str
    line: int
    mark: tuple[str, str] | None  # (kind, text) of the HTML comment just before, if any


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        found.append(Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1,
                           mark.groups() if mark else None))
    return found


def run_guide(path: Path, monkeypatch) -> types.ModuleType:
    """Every Python block not marked not-run, in order, in one fresh module (a guide builds
    its example step by step); every ``test_*`` function a block defines is called, once per
    value of its ``pytest.mark.parametrize`` argument when it has one."""
    # One file, each block at its own line of the guide (tracebacks name the guide's lines), on
    # sys.path: an isolated attack's process imports the guide's classes by module name.
    lines = [""] * (path.read_text().count("\n") + 1)
    for block in blocks(path):
        if block.language != "python" or (block.mark and block.mark[0] == "not-run"):
            continue
        for offset, line in enumerate(block.code.splitlines(), start=block.line):
            lines[offset] = "" if line.startswith("from __future__") else line
    lines[0] = "from __future__ import annotations"  # the guide's title line: no code there
    folder = Path(tempfile.mkdtemp(prefix="guide-"))
    name = f"guide_{path.stem.replace('-', '_')}"
    (folder / f"{name}.py").write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    for name, test in list(vars(module).items()):
        if not (name.startswith("test_") and callable(test)):
            continue
        marks = [mark for mark in getattr(test, "pytestmark", []) if mark.name == "parametrize"]
        if not marks:
            test()
        for argument, values in (mark.args for mark in marks):  # one argument per mark
            for value in values:
                test(**{argument: value})
    return module
