"""Bad data folders, caches and results files (issue #19): a one-line error and exit code 2,
or the right number; never a traceback, never a silently wrong number."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import assert_one_line_error, idx_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bad_files import published, rerun, run_args, written

from advbench import UsageError
from advbench.cli import main
from advbench.reporting.leaderboard import to_markdown
from advbench.reporting.reading import combine_results, read_results
from advbench.reporting.results import REQUIRED, SCHEMA_VERSION

# ------------------------------------------------------------------ data folders


# ------------------------------------------------------------------ the model cache key


def test_another_data_root_does_not_reuse_the_cached_model(tmp_path):
    first, other = idx_folder(tmp_path / "a", 0), idx_folder(tmp_path / "b", 1)
    assert main(run_args(tmp_path, first, "run1")) == 0
    assert main(run_args(tmp_path, other, "run2")) == 0
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    assert main(run_args(tmp_path, first, "run3")) == 0  # the same data: reused, not retrained
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    one, three = (read_results(tmp_path / name / "results.csv") for name in ("run1", "run3"))
    assert one["clean_accuracy"].tolist() == three["clean_accuracy"].tolist()
    recorded = json.loads((tmp_path / "run2" / "manifest.json").read_text())["data"]
    labels = other / "train-labels-idx1-ubyte.gz"
    assert recorded["train"][str(labels.resolve())] == hashlib.sha256(
        labels.read_bytes()).hexdigest()
    assert sorted(Path(path).parent for path in recorded["test"]) == [other.resolve()] * 2
    assert main(["leaderboard", str(tmp_path / "run2")]) == 0  # its CSV and parquet agree


# ------------------------------------------------------------------ results files


def test_a_run_folder_is_its_results_and_manifest(tmp_path, capsys):
    written(tmp_path, published())
    (tmp_path / "manifest.json").write_text(json.dumps({"seed": 1234}))
    assert_one_line_error(capsys, main(["leaderboard", str(tmp_path)]),
                          "is not the manifest of these results (seed 1234 there, 0 in the "
                          "results)")  # another run's (issue #30)
    (tmp_path / "manifest.json").write_text(json.dumps({"seed": 0, "device": "tpu"}))
    assert main(["leaderboard", str(tmp_path)]) == 0
    assert "- **device**: tpu" in capsys.readouterr().out
    read_results(tmp_path / "results.csv").to_parquet(tmp_path / "results.parquet")
    written(tmp_path, rerun(published(), 0.05))  # a hand edit of the CSV alone
    assert_one_line_error(capsys, main(["leaderboard", str(tmp_path)]),
                          f"is in {tmp_path / 'results.csv'} and "
                          f"{tmp_path / 'results.parquet'} with different robust_accuracy")


# ------------------------------------------------------------------ property: any edit

BASE = published(4)
COLUMNS = list(BASE.columns)
values = st.one_of(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(-10, 10**20), st.booleans(), st.just(""))
edit = st.one_of(
    st.tuples(st.just("set"), st.integers(0, len(BASE) - 1), st.sampled_from(COLUMNS), values),
    st.tuples(st.just("drop"), st.just(0), st.sampled_from(COLUMNS), st.none()),
)


def assert_publishable(frame: pd.DataFrame) -> None:
    """The invariants, checked here independently of the loader's code."""
    assert set(REQUIRED) <= set(frame.columns)
    valid = frame["valid"]
    assert valid.dtype == bool
    for column in ("clean_accuracy", "robust_accuracy", "attack_success_rate"):
        numbers = frame[column].dropna()
        assert ((numbers >= 0) & (numbers <= 1)).all(), column
    assert (frame.loc[valid, "robust_accuracy"]
            <= frame.loc[valid, "clean_accuracy"] + 1e-6).all()
    assert np.isfinite(frame["eps"]).all() and (frame["eps"] >= 0).all()
    assert (frame["n_samples"] >= 0).all() and (frame["n_samples"] % 1 == 0).all()
    assert frame["schema_version"].between(1, SCHEMA_VERSION).all()
    if "status" in frame.columns:
        assert ((frame["status"] == "ok") == valid).all()
    for name in ("clean_accuracy", "robust_accuracy"):
        if {f"{name}_ci_low", f"{name}_ci_high"} <= set(frame.columns):
            rows = frame[[f"{name}_ci_low", name, f"{name}_ci_high"]].dropna()
            assert (rows.iloc[:, 0] <= rows.iloc[:, 1] + 1e-6).all()
            assert (rows.iloc[:, 1] <= rows.iloc[:, 2] + 1e-6).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=4))
def test_any_edit_loads_publishable_or_is_refused(edits):
    frame = BASE.copy()
    for kind, row, column, value in edits:
        if column not in frame.columns:
            continue
        if kind == "drop":
            frame = frame.drop(columns=column)
        else:
            frame.loc[row, column] = value
    with tempfile.TemporaryDirectory() as folder:
        path = written(Path(folder), frame)
        try:
            loaded = read_results(path)
            combined = combine_results([(path, loaded), (path, loaded)])
        except UsageError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
    assert_publishable(loaded)
    assert to_markdown(combined).startswith("#")
