"""Bad data folders, caches and results files (issue #19): a one-line error and exit code 2,
or the right number; never a traceback, never a silently wrong number."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_one_line_error, idx_folder, write_cifar_binary
from support.bad_files import published, rerun, run_args, written

from advbench import UsageError
from advbench.cli import main
from advbench.data import Split
from advbench.plugin_system.registry import Source
from advbench.reporting.reading import read_results
from advbench.reporting.results import SCHEMA_VERSION
from advbench.running.model_cache import content_key, data_fingerprint
from advbench.running.plan import RunConfig, build_plan
from advbench.running.worker import Worker

# ------------------------------------------------------------------ data folders

def test_data_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert_one_line_error(capsys, main(run_args(tmp_path, tmp_path / "file")),
                          "is a file, not a folder")
    assert not (tmp_path / "out").exists()


def test_data_root_missing(tmp_path, capsys):
    code = main(run_args(tmp_path, tmp_path / "nowhere"))
    assert_one_line_error(capsys, code, f"--data-root {tmp_path / 'nowhere'} does not exist")


def test_data_root_empty_never_falls_back_to_debian(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(run_args(tmp_path, tmp_path / "empty"))
    assert_one_line_error(capsys, code, f"not found under --data-root {tmp_path / 'empty'}: "
                                        "expected train-images-idx3-ubyte[.gz]")


def test_labels_out_of_range_name_the_file(tmp_path, capsys):
    root = idx_folder(tmp_path / "data", 0, top_label=200)
    code = main(run_args(tmp_path, root))
    assert_one_line_error(capsys, code, "train-labels-idx1-ubyte.gz holds labels 0..200; this "
                                        "dataset has classes 0..9")


def test_images_of_another_size_are_refused(tmp_path, capsys):
    root = idx_folder(tmp_path / "data", 0, size=32)
    code = main(run_args(tmp_path, root))
    assert_one_line_error(capsys, code, "train-images-idx3-ubyte.gz holds 32×32 images; this "
                                        "dataset needs 28×28 images")


def test_cifar_given_root_without_batches(registry, tmp_path):
    with pytest.raises(UsageError, match="CIFAR-10 not found under --data-root"):
        registry.get("dataset", "cifar10").cls().load("test", tmp_path)


def test_cifar_labels_out_of_range_name_the_file(registry, tmp_path):
    written = write_cifar_binary(tmp_path, 3)
    written["test_batch.bin"][1, 0] = 12
    written["test_batch.bin"].tofile(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")
    with pytest.raises(UsageError, match=r"test_batch.bin holds labels \d+..12; this dataset "
                                         r"has classes 0..9"):
        registry.get("dataset", "cifar10").cls().load("test", tmp_path)


def test_split_records_the_files_read_and_their_hash(registry, tmp_path):
    root = idx_folder(tmp_path, 0)
    test = registry.get("dataset", "fashion-mnist").cls().load("test", root)
    images, labels = root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"
    assert test.files == {str(p.resolve()): hashlib.sha256(p.read_bytes()).hexdigest()
                          for p in (images, labels)}
    assert test.subset(torch.arange(5)).files == test.files


# ------------------------------------------------------------------ the model cache key

def plan_for(registry, root: Path, tmp_path: Path):
    config = RunConfig(attacks="fgsm", defenses="none", preset="smoke", n_train=60, n_eval=20,
                       data_root=root, cache_dir=tmp_path / "cache", device="cpu")
    return build_plan(config, registry)


def key_of(plan) -> str:
    return content_key(Worker(plan, None).models.model_parts(plan.build(plan.defenses[0])))


def test_fingerprint_follows_the_data_not_the_indices():
    x, y = torch.rand(10, 1, 4, 4), torch.arange(10) % 3
    first = data_fingerprint(Split(x, y))
    assert first == data_fingerprint(Split(x.clone(), y.clone()))
    nudged = x.clone()
    nudged[3, 0, 1, 2] += 1e-3
    assert data_fingerprint(Split(nudged, y)) != first
    assert data_fingerprint(Split(x, (y + 1) % 3)) != first
    assert data_fingerprint(Split(x.reshape(10, 1, 2, 8), y)) != first  # same bytes, new shape


def test_cache_key_has_the_data_and_the_defense_version(registry, tmp_path):
    plan = plan_for(registry, idx_folder(tmp_path / "a", 0), tmp_path)
    key = key_of(plan)
    assert key == key_of(plan_for(registry, tmp_path / "a", tmp_path))
    assert key != key_of(plan_for(registry, idx_folder(tmp_path / "b", 1), tmp_path))
    entry = plan.defenses[0]
    bumped = Source(entry.source.plugin, entry.source.distribution, entry.source.version + ".1")
    plan.defenses = [dataclasses.replace(entry, source=bumped)]
    assert key_of(plan) != key
    assert plan.model_source == ("advbench", entry.source.version)  # seed-cnn is built in
    plan.model_source = ("advbench", "9")  # a fixed architecture: retrained, not reloaded
    assert key_of(plan) != key_of(dataclasses.replace(plan, model_source=("advbench", "8")))


# ------------------------------------------------------------------ results files


def edited(column: str, value: object, row: int = 2) -> pd.DataFrame:
    frame = published()
    frame.loc[row, column] = value
    return frame


BAD_RESULTS = {
    "text in robust": (edited("robust_accuracy", "abc"), "line 4, column robust_accuracy = "
                                                         "'abc': not a number"),
    "text in clean": (edited("clean_accuracy", "high"), "column clean_accuracy = 'high': not a"),
    "text in eps": (edited("eps", "0.1x"), "column eps = '0.1x': not a number"),
    "text in schema": (edited("schema_version", "one"), "column schema_version = 'one'"),
    "text in median norm": (edited("median_norm", ":"), "column median_norm = ':': not a number"),
    "negative median norm": (edited("median_norm", -1.0), "median_norm = -1.0: a radius must be"),
    "robust above clean": (edited("clean_accuracy", 0.1).assign(robust_accuracy=0.99),
                           "robust_accuracy = 0.99: above clean_accuracy"),
    "accuracy above one": (edited("clean_accuracy", 1.5), "clean_accuracy = 1.5: outside [0, 1]"),
    "outside interval": (edited("robust_accuracy", 0.05), "robust_accuracy = 0.05: below "
                                                          "robust_accuracy_ci_low"),
    "fractional count": (edited("n_samples", 10.5), "n_samples = 10.5: must be a whole number"),
    "negative queries": (edited("queries_mean", -3), "queries_mean = -3.0: must be a finite"),
    "negative eps": (edited("eps", -0.1), "eps = -0.1: must be a finite number >= 0"),
    "infinite eps": (edited("eps", "inf"), "eps = inf: must be a finite"),
    "empty eps": (edited("eps", ""), "eps = nan: empty; every row needs it"),
    "unknown status": (edited("status", "fine"), "status = 'fine': must be one of ok, invalid"),
    "status against valid": (edited("status", "invalid"), "status = 'invalid': disagrees with "
                                                          "valid"),
    "valid not boolean": (edited("valid", "maybe"), "valid = 'maybe': must be True or False"),
    "newer schema": (edited("schema_version", SCHEMA_VERSION + 1), "schema version is newer"),
    "fractional schema": (edited("schema_version", 1.5), "schema_version = 1.5: must be a whole"),
    "no defense": (edited("defense", ""), "column defense = nan: empty"),
    "dropped column": (published().drop(columns="robust_accuracy"),
                       "missing columns: robust_accuracy"),
}


@pytest.mark.parametrize("case", list(BAD_RESULTS), ids=list(BAD_RESULTS))
def test_bad_results_are_refused_naming_file_row_column(case, tmp_path, capsys):
    frame, expected = BAD_RESULTS[case]
    path = written(tmp_path, frame)
    assert_one_line_error(capsys, main(["leaderboard", str(path)]), expected)
    assert_one_line_error(capsys, main(["leaderboard", str(tmp_path)]), f"{path}")  # a folder


def test_parquet_rows_are_named_by_row(tmp_path):
    path = tmp_path / "results.parquet"
    edited("clean_accuracy", 0.1).assign(robust_accuracy=0.99).infer_objects().to_parquet(path)
    with pytest.raises(UsageError, match="results.parquet row 1, column robust_accuracy"):
        read_results(path)


def test_valid_results_load_with_their_types(tmp_path):
    frame = read_results(written(tmp_path, published()))
    assert frame["valid"].dtype == bool and frame["n_samples"].dtype == np.int64
    assert frame["invalid_reason"].tolist()[-1] == "norm 0.2 > eps 0.1"


def test_conflicting_duplicates_name_the_cell_and_both_files(tmp_path, capsys):
    frame = published().loc[lambda f: f["attack"] == "fgm"].reset_index(drop=True)
    a = written(tmp_path, rerun(frame, 0.05), "a.csv")
    b = written(tmp_path, rerun(frame, 0.10), "b.csv")
    assert_one_line_error(capsys, main(["leaderboard", str(a), str(b)]),
                          f"adv-train-fgsm × fgm l2 ε=1.5 is in {a} and {b} with different "
                          "robust_accuracy (0.05 vs 0.1): drop one, or pass --prefer first|last")


@pytest.mark.parametrize("prefer,robust", [("first", "0.050"), ("last", "0.100")])
def test_prefer_takes_one_files_row_whole(prefer, robust, tmp_path, capsys):
    frame = published().loc[lambda f: f["attack"] == "fgm"].reset_index(drop=True)
    a = written(tmp_path, rerun(frame, 0.05), "a.csv")
    b = written(tmp_path, rerun(frame, 0.10), "b.csv")
    assert main(["leaderboard", str(a), str(b), "--prefer", prefer]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines()
                if line.startswith("| adv-train-fgsm"))
    cells = [cell.strip() for cell in line.split("|")]  # defense, clean, worst case, its attack
    assert [cells[3], cells[4], cells[5]] == [robust, "fgm", robust]


def test_identical_duplicates_are_fine(tmp_path, capsys):
    frame = published().assign(targeted="3", flags="")  # parquet: "3" and ""; CSV: 3 and empty
    csv = written(tmp_path, frame)
    frame.infer_objects().to_parquet(tmp_path / "results.parquet")
    assert main(["leaderboard", str(csv), str(tmp_path / "results.parquet"), str(csv)]) == 0
    single = capsys.readouterr().out
    assert main(["leaderboard", str(csv)]) == 0
    assert capsys.readouterr().out == single


def test_a_folder_without_results(tmp_path, capsys):
    assert_one_line_error(capsys, main(["leaderboard", str(tmp_path)]),
                          "is a folder without results.csv or results.parquet")


def test_out_naming_a_folder(tmp_path, capsys):
    path = written(tmp_path, published())
    assert_one_line_error(capsys, main(["leaderboard", str(path), "--out", str(tmp_path)]),
                          f"--out {tmp_path} is a folder; name a file")
    assert_one_line_error(capsys, main(["leaderboard", str(path), "--out",
                                        str(tmp_path / "no" / "board.md")]),
                          "cannot write there")


@pytest.mark.parametrize("text,expected", [
    ("[1, 2]", "not a bench manifest (a JSON object expected, found list)"),
    ('"run"', "not a bench manifest"),
    ('{"figures": 5}', "'figures' must be a list of paths"),
    ("{", "not a readable manifest (JSONDecodeError)"),
])
def test_bad_manifest(text, expected, tmp_path, capsys):
    path = written(tmp_path, published())
    (tmp_path / "m.json").write_text(text)
    code = main(["leaderboard", str(path), "--manifest", str(tmp_path / "m.json")])
    assert_one_line_error(capsys, code, expected)


# ------------------------------------------------------------------ property: any edit
