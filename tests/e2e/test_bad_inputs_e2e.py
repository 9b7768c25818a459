"""Issue #19, CLI half: every bad input is one line naming the fix, exit 2, nothing written,
never a traceback, a hang, a silently wrong number or a lost result."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import RUN, assert_one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from advbench import UsageError, load_registry, run_matrix
from advbench.cli import main
from advbench.plugin_system.options import (
    format_set,
    parse_set,
)

SMALL = ["--n-train", "500", "--n-eval", "20"]


def test_api_config_types_are_checked():
    with pytest.raises(UsageError, match="--n-eval: expected an integer or null, got '20'"):
        run_matrix(preset="smoke", attacks="fgsm", defenses="none", n_eval="20")


# -- plugins ------------------------------------------------------------------------------


def test_plugin_module_failures_are_said_on_the_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_PLUGINS", "no_such_plugin_module,json")
    code = main([*RUN, "--n-eval", "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert any(line.startswith("bench: warning: plugin no_such_plugin_module") and
               "ModuleNotFoundError" in line for line in err), err
    assert any("plugin json" in line and "defines no bench hook" in line for line in err), err
    assert err[-1].startswith("bench: error: --n-eval"), err
    registry = load_registry()
    assert {f.source.plugin for f in registry.failures} == {"no_such_plugin_module", "json"}


# -- finished runs: output, resume --------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One small finished run (fgsm × none), copied by each test that needs one."""
    root = tmp_path_factory.mktemp("finished")
    assert main([*RUN, *SMALL, "--out", str(root / "run"), "--cache-dir",
                 str(root / "cache")]) == 0
    return root / "run"


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def test_resume_refuses_flags_that_would_change_the_run(run_copy, capsys):
    code = main(["run", "--resume", str(run_copy), "--n-eval", "50", "--seed", "7"])
    assert_one_line_error(capsys, code, "--n-eval, --seed would change the recorded run "
                                        "(n_eval=20, seed=0)")
    code = main(["run", "--resume", str(run_copy), "--seed", "0", "--out", "elsewhere"])
    assert_one_line_error(capsys, code, "--out would change the recorded run")


def test_resume_of_an_unwritable_folder(run_copy, capsys, monkeypatch):
    real = Path.write_text

    def refuse(path, *args, **kwargs):
        if path.parent == run_copy:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse)
    before = (run_copy / "results.csv").read_bytes()
    code = main(["run", "--resume", str(run_copy)])
    assert_one_line_error(capsys, code, f"--resume {run_copy}: cannot write there "
                                        "(Permission denied)")
    assert (run_copy / "results.csv").read_bytes() == before


def test_resume_with_a_mistyped_manifest(run_copy, capsys):
    path = run_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["n_eval"] = "200"
    path.write_text(json.dumps(manifest))
    code = main(["run", "--resume", str(run_copy)])
    assert_one_line_error(capsys, code, f"{path}: key 'n_eval': expected an integer or null, "
                                        "got '200'")
    manifest["config"]["n_evals"] = 3
    path.write_text(json.dumps(manifest))
    assert_one_line_error(capsys, main(["run", "--resume", str(run_copy)]),
                          "unknown key 'n_evals'")


def test_resume_with_a_foreign_samples_file(run_copy, capsys):
    before = (run_copy / "results.csv").read_bytes()
    pd.DataFrame({"x": [1, 2]}).to_parquet(run_copy / "samples.parquet")
    code = main(["run", "--resume", str(run_copy)])
    assert_one_line_error(capsys, code, f"{run_copy / 'samples.parquet'} is not a bench file "
                                        "of this run (no column cell_key")
    assert (run_copy / "results.csv").read_bytes() == before


def test_resume_with_a_hand_edited_result(run_copy, capsys):
    path = run_copy / "results.parquet"
    frame = pd.read_parquet(path)
    frame.loc[0, "robust_accuracy"] = 1.5
    frame.to_parquet(path, index=False)
    code = main(["run", "--resume", str(run_copy)])
    assert_one_line_error(capsys, code, f"{path} row 1, column robust_accuracy = 1.5: outside")


class ClosedPipe(io.StringIO):
    """stdout whose reader has gone, as under ``bench run | head -1``."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_loses_no_result(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    out = tmp_path / "run"
    code = main([*RUN, *SMALL, "--out", str(out), "--cache-dir",
                 str(finished.parent / "cache")])
    assert code == 0
    assert capsys.readouterr().err == ""
    assert (out / "leaderboard.md").is_file()
    assert len(pd.read_csv(out / "results.csv")) == 1


def test_a_narrow_terminal_still_shows_the_numbers(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10")
    code = main([*RUN, *SMALL, "--out", str(tmp_path / "run"), "--cache-dir",
                 str(finished.parent / "cache")])
    assert code == 0
    robust = pd.read_csv(tmp_path / "run" / "results.csv")["robust_accuracy"].iloc[0]
    table = [line for line in capsys.readouterr().out.splitlines() if "│ none" in line]
    assert table and f"{robust:.3f}" in table[0], table


# -- parsers, for any text ------------------------------------------------------------------


NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
SCALARS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(alphabet="abcxyz_-", min_size=1, max_size=8))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, st.dictionaries(NAMES, st.lists(
    st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), min_size=1, max_size=3),
    min_size=1, max_size=3), max_size=3))
def test_set_round_trips(options):
    assert parse_set(format_set(options)) == options
