"""The guides cannot go stale: their Python blocks run, their plugin classes pass the
conformance kit, their ``bench list`` output is bench's, and their links lead somewhere.

A block preceded by ``<!-- not-run: reason -->`` is a fragment and is skipped; a block preceded
by ``<!-- output: bench list -->`` shows rows of ``bench list`` and is compared with it.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from advbench.running.executors import Executor

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
    module = types.ModuleType(f"guide_{path.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks(path):
        if block.language != "python" or (block.mark and block.mark[0] == "not-run"):
            continue
        code = compile(block.code, f"{path.name}:{block.line}", "exec", dont_inherit=True)
        exec(code, module.__dict__)  # dont_inherit: as a file of its own, not this one
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


def test_every_skipped_block_says_why():
    for path in GUIDES:
        for block in blocks(path):
            if block.mark and block.mark[0] == "not-run":
                assert block.mark[1], f"{path.name}:{block.line}: not-run without a reason"


def test_the_executor_sketch_is_the_real_contract(monkeypatch):
    sketch = run_guide(ROOT / "docs" / "scaling.md", monkeypatch).Executor
    methods = {name: list(inspect.signature(member).parameters)
               for name, member in vars(Executor).items() if inspect.isfunction(member)}
    assert methods == {name: list(inspect.signature(member).parameters)
                       for name, member in vars(sketch).items() if inspect.isfunction(member)}


@pytest.mark.parametrize("path", [*GUIDES, ROOT / "README.md", EXAMPLE / "README.md"],
                         ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_lead_somewhere(path):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    missing = [target for target in targets
               if "://" not in target and not (path.parent / target).exists()]
    assert missing == []
