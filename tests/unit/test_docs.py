"""The guides cannot go stale: their Python blocks run, their plugin classes pass the
conformance kit, their ``bench list`` output is bench's, and their links lead somewhere.

A block preceded by ``<!-- not-run: reason -->`` is a fragment and is skipped; a block preceded
by ``<!-- output: bench list -->`` shows rows of ``bench list`` and is compared with it.
"""

from __future__ import annotations

import inspect
import re

import pytest
from support.docs import EXAMPLE, GUIDES, ROOT, blocks, run_guide

from advbench.running.executors import Executor


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
