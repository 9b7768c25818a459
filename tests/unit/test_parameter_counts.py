"""The run machinery keeps its functions small: none in ``advbench.running`` takes more than
eight parameters (``self`` and ``*args``/``**kwargs`` included). What a cell needs travels in
frozen dataclasses instead (``CellSpec``, ``Sealed``); a longer list is a sign that a function
does two jobs."""

from __future__ import annotations

import ast
from pathlib import Path

RUNNING = Path(__file__).resolve().parents[2] / "benchmark" / "running"
LIMIT = 8


def parameter_counts(path: Path) -> dict[str, int]:
    """Each function of ``path`` (``line name``) and how many parameters it takes."""
    counts = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            counts[f"{path.name}:{node.lineno} {node.name}"] = (
                len(args.posonlyargs + args.args + args.kwonlyargs)
                + (args.vararg is not None) + (args.kwarg is not None))
    return counts


def test_the_counter_counts_every_kind_of_parameter(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("def f(a, /, b, *rest, c, **more): pass\n"
                      "class C:\n    def m(self, x=1): pass\n", encoding="utf-8")
    assert parameter_counts(source) == {"sample.py:1 f": 5, "sample.py:3 m": 2}


def test_no_function_in_running_takes_more_than_eight_parameters():
    counts = {name: n for path in sorted(RUNNING.rglob("*.py"))
              for name, n in parameter_counts(path).items()}
    assert len(counts) > 100  # the rule reads the whole package, not an empty folder
    over = {name: n for name, n in counts.items() if n > LIMIT}
    assert not over, f"more than {LIMIT} parameters: {over}"
