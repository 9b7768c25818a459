"""Caches and results files that were edited by hand (issue #30): a cached cell is checked
against its own per-sample outcome and the results' invariants, and dropped and computed again
with a warning when it fails; a resumed run and `bench leaderboard` refuse what contradicts
itself in one line, never publishing it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import assert_one_line_error

from advbench.cli import main
from advbench.reporting.results import wilson_interval
from advbench.running.cell_cache import METADATA, CellCache

RUN = ["run", "--preset", "smoke", "--n-train", "1000", "--model", "sample_models:tiny_mlp",
       "--defenses", "none", "--attacks", "fgsm,pgd-linf"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One finished run (40 samples) and its caches, and a run of 20 samples beside it."""
    root = tmp_path_factory.mktemp("base")
    cache = ["--cache-dir", str(root / "cache")]
    assert main([*RUN, "--n-eval", "40", *cache, "--out", str(root / "run")]) == 0
    assert main([*RUN, "--n-eval", "20", *cache, "--out", str(root / "small")]) == 0
    return root


@pytest.fixture
def work(base, tmp_path) -> Path:
    """A copy of the base runs and caches, to edit."""
    shutil.copytree(base, tmp_path / "w")
    return tmp_path / "w"


def results(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "results.parquet").drop(columns="seconds")


def said(capsys) -> str:
    """What the run printed, on one line (rich wraps long lines at the terminal's width and
    puts where each log line comes from at the end of its first line)."""
    return " ".join(word for word in capsys.readouterr().out.split()
                    if not re.fullmatch(r"\w+\.py:\d+", word))


# ---- the cell cache ------------------------------------------------------------------------

def entry_of(cache: Path, attack: str, n: int = 40) -> Path:
    """The cell cache's entry of ``attack``'s cell on ``n`` samples."""
    for path in (cache / "cells").glob("*.parquet"):
        row = json.loads(pq.read_schema(path).metadata[METADATA])["row"]
        if (row["attack"], row["n_samples"]) == (attack, n):
            return path
    raise AssertionError(f"no cached {attack} cell")


def edit_entry(path: Path, row: dict | None = None, extras: dict | None = None) -> None:
    """Edit the JSON an entry keeps in its parquet metadata, as a user would."""
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[METADATA])
    meta["row"].update(row or {})
    meta["extras"].update(extras or {})
    pq.write_table(table.replace_schema_metadata(
        {**table.schema.metadata, METADATA: json.dumps(meta)}), path)


def with_interval(robust: float, n: int = 40) -> dict:
    low, high = wilson_interval(round(robust * n), n)
    return {"robust_accuracy": robust, "robust_accuracy_ci_low": low,
            "robust_accuracy_ci_high": high}


@pytest.mark.parametrize("edit, why", [
    ({"row": {"robust_accuracy": 0.5}}, "robust_accuracy"),
    ({"row": {"robust_accuracy": 1.5}}, "outside [0, 1]"),
    ({"row": with_interval(0.0)}, "robust_accuracy is 0.0 but its 40 per-sample outcomes"),
    ({"row": {"n_samples": 7}}, "n_samples"),
    ({"row": {"valid": False, "status": "invalid"}}, "valid and its per-sample outcome"),
    ({"extras": {"history": [1, 2]}}, "its training history is not one"),
    # the cell's name or ε edited (was: published as the run's fgsm cell at ε 0.3, or "pgd")
    ({"row": {"eps": 0.3}}, "eps is 0.3, not this cell's 0.1"),
    ({"row": {"attack": "pgd"}}, "attack is 'pgd', not this cell's 'fgsm'"),
    ({"row": {"cell_key": "0" * 20}}, "cell_key is '00000000000000000000'"),
])
def test_a_tampered_cache_entry_is_dropped_and_computed_again(edit, why, work, capsys):
    entry = entry_of(work / "cache", "fgsm")
    edit_entry(entry, **edit)
    capsys.readouterr()
    assert main([*RUN, "--n-eval", "40", "--cache-dir", str(work / "cache"), "--out",
                 str(work / "again")]) == 0
    out = said(capsys)
    assert f"cell cache entry {entry.name} dropped" in out and why in out, out
    assert "computing the cell again" in out and "1 cells reused" in out  # pgd-linf's
    pd.testing.assert_frame_equal(results(work / "again"), results(work / "run"))
    assert CellCache(entry.parent).load(entry.stem) is not None  # written whole again


def test_a_cached_number_stored_as_text_is_dropped(work, capsys):
    """The robust accuracy written as the text of its own value (was: TypeError in the sanity
    battery, a traceback): the entry is dropped and the cell computed again."""
    entry = entry_of(work / "cache", "fgsm")
    robust = json.loads(pq.read_schema(entry).metadata[METADATA])["row"]["robust_accuracy"]
    edit_entry(entry, row={"robust_accuracy": str(robust)})
    capsys.readouterr()
    assert main([*RUN, "--n-eval", "40", "--cache-dir", str(work / "cache"), "--out",
                 str(work / "again")]) == 0
    out = said(capsys)
    assert f"robust_accuracy is the text '{robust}', not a number" in out, out
    pd.testing.assert_frame_equal(results(work / "again"), results(work / "run"))


def test_a_cached_history_that_is_no_history_is_dropped(tmp_path, capsys):
    """A model's history.json holding a list or garbage: the history is dropped with a line
    saying so, the model is still used, and every file of the run is written."""
    run = [*RUN[:-4], "--defenses", "adv-train-fgsm", "--attacks", "fgsm", "--n-eval", "20",
           "--cache-dir", str(tmp_path / "cache")]
    assert main([*run, "--out", str(tmp_path / "first")]) == 0
    (history,) = (tmp_path / "cache").glob("*.history.json")
    assert (tmp_path / "first" / "figures" / "training_adv-train-fgsm.png").is_file()
    for number, text in enumerate(["[1, 2]", "{garbage"]):
        history.write_text(text)
        shutil.rmtree(tmp_path / "cache" / "cells")  # the defended model must be loaded
        capsys.readouterr()
        out = tmp_path / f"again{number}"
        assert main([*run, "--out", str(out)]) == 0
        text = said(capsys)
        assert f"{history.name}" in text and "dropped" in text, text
        assert (out / "leaderboard.md").is_file() and (out / "index.html").is_file()
        assert not (out / "figures" / "training_adv-train-fgsm.png").exists()
        pd.testing.assert_frame_equal(results(out), results(tmp_path / "first"))


# ---- a run folder's files, on --resume and in bench leaderboard -----------------------------

def test_resume_refuses_samples_that_contradict_their_rows(work, capsys):
    """Every sample made robust in samples.parquet: the rows say otherwise."""
    path = work / "run" / "samples.parquet"
    samples = pd.read_parquet(path)
    samples["adv_pred"], samples["robust"] = samples["label"], samples["clean_correct"]
    samples.to_parquet(path, index=False)
    code = main(["run", "--resume", str(work / "run")])
    assert_one_line_error(capsys, code, f"--resume {work / 'run'}: the fgsm row of "
                                        f"{work / 'run' / 'results.parquet'} disagrees with "
                                        f"{path} (robust_accuracy is")


def test_resume_of_a_finished_run_keeps_every_number(work, capsys):
    """certified_broken of the worst case included (it was emptied)."""
    first = results(work / "run")
    assert main(["run", "--resume", str(work / "run")]) == 0
    resumed = results(work / "run")
    worst = resumed[resumed["attack"] == "worst-case"]
    assert len(worst) == 1 and worst["certified_broken"].notna().all()
    pd.testing.assert_frame_equal(resumed, first, check_dtype=False)


def worst_case_above_its_attacks(frame: pd.DataFrame) -> pd.DataFrame:
    """The worst case set to its clean accuracy (self-consistent: a whole count, inside its
    interval): above the attacks it is the worst case of."""
    frame = frame.copy()
    worst = frame.index[frame["attack"] == "worst-case"][0]
    for column, value in with_interval(float(frame.loc[worst, "clean_accuracy"])).items():
        frame.loc[worst, column] = value
    return frame


def test_a_worst_case_above_its_attacks_is_refused(work, capsys):
    run = work / "run"
    edited = worst_case_above_its_attacks(pd.read_csv(run / "results.csv"))
    edited.to_csv(run / "results.csv", index=False)
    code = main(["leaderboard", str(run / "results.csv")])
    assert_one_line_error(capsys, code, f"{run / 'results.csv'} line 4, column robust_accuracy"
                                        " = 0.375: above the robust accuracy of an attack of "
                                        "its threat model")
    edited.to_parquet(run / "results.parquet", index=False)
    code = main(["run", "--resume", str(run)])
    assert_one_line_error(capsys, code, "above the robust accuracy of an attack")


@pytest.mark.parametrize("column, value, expected", [
    ("broken_by", "{oops", "line 4, column broken_by = '{oops': not a JSON object"),
    ("broken_by", '["fgsm"]', "line 4, column broken_by"),
    ("broken_by", '{"fgsm": 41}', "line 4, column broken_by"),
    ("n_samples", 7, "line 2, column clean_accuracy = 0.375: not a whole number of the row's "
                     "n_samples"),
    ("n_samples", 0, "line 2, column n_samples = 0: below 1"),
])
def test_impossible_counts_are_refused(column, value, expected, work, capsys):
    path = work / "run" / "results.csv"
    frame = pd.read_csv(path)
    frame[column] = frame[column].astype(object)
    frame.loc[2 if column == "broken_by" else 0, column] = value
    frame.to_csv(path, index=False)
    assert_one_line_error(capsys, main(["leaderboard", str(path)]), f"{path} {expected}")


def test_a_results_file_with_only_its_header(work, capsys):
    path = work / "run" / "results.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert_one_line_error(capsys, main(["leaderboard", str(path)]),
                          f"{path}: holds no result rows (only a header); regenerate it")


def test_the_manifest_must_be_the_results_run(work, capsys):
    run, small = work / "run", work / "small"
    assert main(["leaderboard", str(run / "results.csv"), "--manifest",
                 str(run / "manifest.json")]) == 0
    code = main(["leaderboard", str(run / "results.csv"), "--manifest",
                 str(small / "manifest.json")])
    assert_one_line_error(capsys, code, f"--manifest {small / 'manifest.json'} is not the "
                                        "manifest of these results (no test split of 40 "
                                        "samples there)")
    other = json.loads((run / "manifest.json").read_text())
    (work / "m.json").write_text(json.dumps({**other, "model": "seed-cnn"}))
    code = main(["leaderboard", str(run / "results.csv"), "--manifest", str(work / "m.json")])
    assert_one_line_error(capsys, code, "(model seed-cnn there, sample_models:tiny_mlp in "
                                        "the results)")


def test_runs_of_other_samples_are_not_merged(work, capsys):
    run, small = work / "run", work / "small"
    code = main(["leaderboard", str(run / "results.csv"), str(small / "results.csv")])
    assert_one_line_error(capsys, code, f"{run / 'results.csv'} and {small / 'results.csv'} "
                                        "evaluate fashion-mnist (test) on different samples "
                                        "(n_samples: [40] vs [20]): merge only runs of the "
                                        "same data, --n-eval and --seed")
    # as many samples, other data (another --data-root): told by the manifests
    shutil.copytree(run, work / "copy")
    manifest = json.loads((work / "copy" / "manifest.json").read_text())
    manifest["samples"]["test"]["data"] = "0" * 20
    (work / "copy" / "manifest.json").write_text(json.dumps(manifest))
    code = main(["leaderboard", str(run / "results.csv"), str(work / "copy" / "results.csv")])
    assert_one_line_error(capsys, code, "on different samples (sample data: ")
    # the same run twice (its CSV and parquet) is one evaluation set
    assert main(["leaderboard", str(run)]) == 0
