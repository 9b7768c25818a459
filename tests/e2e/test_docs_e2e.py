"""The guides cannot go stale: their Python blocks run, their plugin classes pass the
conformance kit, their ``bench list`` output is bench's, and their links lead somewhere.

A block preceded by ``<!-- not-run: reason -->`` is a fragment and is skipped; a block preceded
by ``<!-- output: bench list -->`` shows rows of ``bench list`` and is compared with it.
"""

from __future__ import annotations

import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from advbench import Attack, Defense
from advbench.cli import describe_capabilities, main
from advbench.conformance import check_attack, check_defense

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


@pytest.mark.parametrize("path", GUIDES, ids=lambda path: path.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = run_guide(path, monkeypatch)
    for value in vars(module).values():  # plugin classes the guide defines pass the kit
        if isinstance(value, type) and value.__module__ == module.__name__:
            if issubclass(value, Attack):
                check_attack(value)
            elif issubclass(value, Defense):
                check_defense(value)


def test_the_guide_runs_its_example_end_to_end(tmp_path, monkeypatch):
    """The guide's own attack and defense, and its conformance tests, are really there."""
    monkeypatch.chdir(tmp_path)
    module = run_guide(ROOT / "docs" / "writing-plugins.md", monkeypatch)
    assert module.GaussianNoise.name == "gaussian-noise"
    assert module.bench_attacks() == [module.GaussianNoise]
    assert module.bench_defenses() == [module.InputQuantization]
    assert {"test_conformance", "test_attack_conformance"} <= set(vars(module))


def test_bench_list_output_is_benchs(monkeypatch, capsys):
    """The rows the guide shows are the example's rows of ``bench list`` now (kind, name,
    capabilities; the distribution only when the example is installed)."""
    shown = [block for block in blocks(ROOT / "docs" / "writing-plugins.md")
             if block.mark == ("output", "bench list")]
    assert shown
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("BENCH_PLUGINS", "bench_example_plugin.gaussian_noise,"
                       "bench_example_plugin.input_quantization")
    assert main(["list", "--json"]) == 0
    listed = {record["name"]: record for record in json.loads(capsys.readouterr().out)["plugins"]}
    for block in shown:
        rows = [[cell.strip() for cell in line.strip("│ ").split("│")]
                for line in block.code.splitlines() if line.startswith("│")]
        assert rows
        for kind, name, distribution, capabilities, _ in rows:
            record = listed[name]
            assert (kind, capabilities) == (record["kind"],
                                            describe_capabilities(record["capabilities"]))
            if record["distribution"] != "local":
                assert distribution == f"{record['distribution']} {record['version']}"
