"""The guides cannot go stale: their Python blocks run, their plugin classes pass the
conformance kit, their ``bench list`` output is bench's, and their links lead somewhere.

A block preceded by ``<!-- not-run: reason -->`` is a fragment and is skipped; a block preceded
by ``<!-- output: bench list -->`` shows rows of ``bench list`` and is compared with it.
"""

from __future__ import annotations

import json

import pytest
from support.docs import EXAMPLE, GUIDES, ROOT, blocks, run_guide

from advbench import Attack, Defense
from advbench.cli import describe_capabilities, main
from advbench.conformance import check_attack, check_defense


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
