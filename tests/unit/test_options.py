"""``--set PLUGIN.KEY=V[,V...]``: plugin arguments from the command line, one variant per value."""

from __future__ import annotations

import pytest
from helpers import assert_run_refused

from advbench.errors import UsageError
from advbench.plugin_system.options import parse_set, split_top_level


def test_values_are_typed_and_split_outside_brackets():
    parsed = parse_set(["pgd-linf.steps=10,40", "pixel-scan.values=[0.0,1.0],[1.0]",
                        "pgd-linf.random_start=false", "x.mode=fast"])
    assert parsed == {"pgd-linf": {"steps": [10, 40], "random_start": [False]},
                      "pixel-scan": {"values": [[0.0, 1.0], [1.0]]}, "x": {"mode": ["fast"]}}
    assert split_top_level("a,(1,2),[3,[4,5]]") == ["a", "(1,2)", "[3,[4,5]]"]


@pytest.mark.parametrize("spec", ["sigma=0.5", "gaussian-smoothing.sigma", ".sigma=1",
                                  "gaussian-smoothing.=1", "gaussian-smoothing.sigma="])
def test_malformed_specs_are_usage_errors(spec):
    with pytest.raises(UsageError, match="expected PLUGIN.KEY=VALUE"):
        parse_set([spec])


BAD_SETS = {
    "plugin not in the run": (["--set", "pgd-linf.steps=3"], "pgd-linf is not among"),
    "unknown argument": (["--attacks", "pgd-linf", "--set", "pgd-linf.step=3"],
                         "has no argument 'step'; its arguments: steps, rel_step_size"),
    "wrong type": (["--attacks", "pgd-linf", "--set", "pgd-linf.steps=many"],
                   "expected an integer, like its default 20"),
    "rejected value": (["--attacks", "pgd-linf", "--set", "pgd-linf.steps=-1"],
                       "steps must be >= 0"),
    "no values": (["--set", "none.x"], "expected PLUGIN.KEY=VALUE"),
}


@pytest.mark.parametrize("case", list(BAD_SETS), ids=list(BAD_SETS))
def test_bad_arguments_exit_2_before_anything_runs(case, tmp_path, capsys):
    assert_run_refused(*BAD_SETS[case], tmp_path, capsys)
