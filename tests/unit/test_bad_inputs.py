"""Issue #19, CLI half: every bad input is one line naming the fix, exit 2, nothing written,
never a traceback, a hang, a silently wrong number or a lost result."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
from helpers import RUN, assert_one_line_error, assert_run_refused
from hypothesis import given, settings
from hypothesis import strategies as st

from advbench import UsageError
from advbench.cli import format_eps, main, parse_eps
from advbench.plugin_system.options import (
    argument,
    checked_value,
    default_problems,
    parse_set,
)
from advbench.running.plan import parse_targeted, resolve_eps
from advbench.threat import NORMS

SMALL = ["--n-train", "500", "--n-eval", "20"]
DEEP = "[" * 100_000

BAD_ARGUMENTS = {
    "negative query budget": (["--attacks", "random-search", "--set",
                               "random-search.max_queries=-5"], "max_queries must be >= 1"),
    "text for a number": (["--attacks", "random-search", "--set", "random-search.p_init=abc"],
                          "expected a number or null"),
    "probability above 1": (["--attacks", "random-search", "--set",
                             "random-search.p_init=1.5"], "p_init must be <= 1"),
    "not finite": (["--attacks", "random-search", "--set", "random-search.p_init=NaN"],
                   "p_init must be a finite number"),
    "past int64": (["--attacks", "random-search", "--set",
                    f"random-search.max_queries={10**30}"], "must fit in a signed 64-bit integer"),
    "smoothing sigma zero": (["--defenses", "gaussian-smoothing", "--set",
                              "gaussian-smoothing.sigma=0"], "sigma must be > 0"),
    "bool for an int": (["--attacks", "pgd-linf", "--set", "pgd-linf.steps=true"],
                        "expected an integer"),
    "repeated key": (["--attacks", "pgd-linf", "--set", "pgd-linf.steps=5", "--set",
                      "pgd-linf.steps=2"], "pgd-linf.steps is given twice"),
    "nested too deeply": (["--attacks", "random-search", "--set",
                           f"random-search.p_init={DEEP}"], "nested too deeply"),
    "two dots": (["--set", "fgsm..x=1"], "--set fgsm..x=1: expected PLUGIN.KEY=VALUE"),
    "all with names": (["--attacks", "all,fgsm"], "'all' stands alone"),
    "huge batch size": (["--batch-size", "99999999999999999999999"],
                        "--batch-size must be a positive integer up to 1,048,576"),
    "huge seed": (["--seed", "99999999999999999999999"], "--seed must be an integer from 0"),
    "negative seed": (["--seed", "-1"], "--seed must be an integer from 0"),
    "huge n-eval": (["--n-eval", "100000000"], "--n-eval must be a positive integer up to"),
    "huge n-train": (["--n-train", "1000000000"], "--n-train must be a positive integer up"),
    "huge epochs": (["--epochs", "100000"], "--epochs must be a positive integer up to"),
    "huge eot": (["--eot-samples", "100000"], "--eot-samples must be a positive integer up"),
    "huge workers": (["--executor", "processes", "--workers", "100000"],
                     "--workers must be a positive integer up to 1,024"),
    "factory returns a string": (["--model", "os:getcwd"], "returned str, not a torch.nn"),
    "factory not callable": (["--model", "math:pi"], "is not a callable object"),
    "factory needs other arguments": (["--model", "torch.nn:Linear"], "missing 2 required"),
    "factory of the wrong output": (["--model", "torch.nn:Flatten"],
                                    "not logits of shape (2, 10)"),
    "eps infinite": (["--eps", "linf=inf"], "finite numbers >= 0"),
    "unreachable ray": (["--executor", "ray", "--ray-address", "127.0.0.1:1"],
                        "no Ray cluster answers there"),
    "ray address without port": (["--executor", "ray", "--ray-address", "127.0.0.1"],
                                 "expected HOST:PORT"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS), ids=list(BAD_ARGUMENTS))
def test_bad_arguments(case, tmp_path, capsys):
    started = time.monotonic()
    assert_run_refused(*BAD_ARGUMENTS[case], tmp_path, capsys)
    assert time.monotonic() - started < 30  # refused, not retried or trained first


def test_cache_dir_naming_a_file_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main([*RUN, *SMALL, "--cache-dir", str(blocker), "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "is a file, not a folder")
    assert not (tmp_path / "out").exists()


def test_minus_zero_eps_is_zero(registry):
    assert math.copysign(1, parse_eps(["l2=-0"])["l2"][0]) == 1
    attacks = [registry.get("attack", "fgm")]
    dataset = registry.get("dataset", "fashion-mnist").cls()
    eps = resolve_eps({"l2": [-0.0]}, attacks, dataset)
    assert eps["l2"] == [0.0] and math.copysign(1, eps["l2"][0]) == 1
    assert checked_value(registry.get("defense", "certified-training").cls, "eps", -0.0) == 0.0
    assert str(checked_value(registry.get("defense", "certified-training").cls, "eps",
                             -0.0)) == "0.0"


# -- plugins ------------------------------------------------------------------------------

def test_builtin_defaults_keep_their_own_bounds(registry):
    for kind in ("attack", "defense"):
        for entry in registry.entries[kind].values():
            assert default_problems(entry.cls) == [], entry.name


def test_third_party_fields_declare_bounds():
    @dataclasses.dataclass(kw_only=True)
    class Mine:
        name = "mine"
        rate: float = argument(0.5, gt=0, le=1)
        sizes: tuple[int, ...] = dataclasses.field(default=(1,), metadata={"ge": 1})
        note: str | None = None

    assert checked_value(Mine, "rate", 1) == 1.0
    assert checked_value(Mine, "sizes", [2, 3]) == (2, 3)
    for key, value, message in [("rate", 0, "rate must be > 0"),
                                ("sizes", [1, 0], "sizes must be >= 1"),
                                ("sizes", [1.5], "expected a list of integers"),
                                ("note", 3, "expected a string or null")]:
        with pytest.raises(UsageError, match=message):
            checked_value(Mine, key, value)


# -- finished runs: output, resume --------------------------------------------------------


# -- parsers, for any text ------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
SYNTAX = st.text(alphabet="lin2f0=.,-+e5[]()\"' aNI\\", max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(TEXT, SYNTAX), max_size=3))
def test_eps_parser_returns_valid_values_or_a_usage_error(values):
    try:
        parsed = parse_eps(values)
    except UsageError:
        return
    if parsed is not None:
        assert all(math.isfinite(v) and v >= 0 and math.copysign(1, v) == 1
                   for numbers in parsed.values() for v in numbers)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(TEXT, SYNTAX, st.builds(lambda t: "a.b=" + t, SYNTAX)), max_size=3))
def test_set_parser_returns_valid_values_or_a_usage_error(specs):
    try:
        parsed = parse_set(specs)
    except UsageError:
        return
    for keys in parsed.values():
        for values in keys.values():
            assert isinstance(values, list) and values
            json.dumps(values)  # a manifest can store it


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_targeted_parser_returns_valid_values_or_a_usage_error(text):
    try:
        mode = parse_targeted(text, 10)
    except UsageError:
        return
    assert mode in ("random", "least-likely") or int(mode) in range(10)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(NORMS), st.lists(
    st.floats(min_value=0, allow_infinity=False), min_size=1, max_size=4), max_size=3))
def test_eps_round_trips(eps):
    assert parse_eps(format_eps(eps)) == ({k: [v + 0.0 for v in vs] for k, vs in eps.items()}
                                          or None)


@given(st.sampled_from(["random", "least-likely", *map(str, range(10))]))
def test_targeted_round_trips(mode):
    assert parse_targeted(mode, 10) == mode
