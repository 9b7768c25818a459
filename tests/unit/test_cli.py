"""Every bad input gets one clear line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import RUN, assert_one_line_error, assert_run_refused

from advbench.cli import main


def results_file(root: Path, kind: str) -> Path:
    path = root / "results.csv"
    if kind == "garbage":
        path.write_bytes(b"\x00\x01not,a\ncsv\"file")
    elif kind == "foreign":
        pd.DataFrame({"model": ["x"], "accuracy": [0.5]}).to_csv(path, index=False)
    elif kind == "future":
        pd.DataFrame([{"dataset": "d", "model": "m", "defense": "none", "attack": "a",
                       "norm": "linf", "eps": 0.1, "split": "test", "n_samples": 1,
                       "clean_accuracy": 1.0, "robust_accuracy": 0.0,
                       "attack_success_rate": 1.0, "valid": True, "invalid_reason": "",
                       "schema_version": 99}]).to_csv(path, index=False)
    return path


BAD_RUNS = {
    "unknown attack": (["--attacks", "fgsn"], "did you mean 'fgsm'"),
    "unknown defense": (["--defenses", "nonee"], "did you mean 'none'"),
    "unknown dataset": (["--dataset", "fashion"], "unknown dataset 'fashion'"),
    "unknown model": (["--model", "cnn"], "unknown model 'cnn'"),
    "model import fails": (["--model", "no_such_pkg.mod:factory"], "cannot import"),
    "model path without factory": (["--model", "torch.nn:"], "package.module:factory"),
    "eps negative": (["--eps", "linf=-0.1"], ">= 0"),
    "eps not a number": (["--eps", "linf=abc"], "not a comma list of numbers"),
    "eps without norm": (["--eps", "0.1"], "expected NORM=VALUE"),
    "eps unknown norm": (["--eps", "lfoo=0.1"], "unknown norm 'lfoo'"),
    "eps norm unsupported": (["--eps", "l2=1.0"], "none of the selected attacks supports l2"),
    "eps nan": (["--eps", "linf=nan"], "finite"),
    "n-eval zero": (["--n-eval", "0"], "--n-eval must be a positive integer"),
    "n-eval negative": (["--n-eval", "-5"], "--n-eval must be a positive integer"),
    "n-eval above split": (["--n-eval", "20000"], "exceeds the 10000 samples"),
    "n-train zero": (["--n-train", "0"], "--n-train must be a positive integer"),
    "epochs not integer": (["--epochs", "abc"], "invalid int value"),
    "batch size zero": (["--batch-size", "0"], "--batch-size must be a positive integer"),
    "unknown preset": (["--preset", "huge"], "unknown preset 'huge'"),
    "unknown device": (["--device", "tpu"], "invalid choice"),
    "unknown split": (["--split", "validation"], "choose one of test, train, both"),
    "unknown executor": (["--executor", "dask"], "invalid choice"),
    "workers without processes": (["--workers", "2"], "--workers goes with --executor processes"),
    "zero workers": (["--executor", "processes", "--workers", "0"],
                     "--workers must be a positive integer"),
    "ray address without ray": (["--ray-address", "auto"], "goes with --executor ray"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS), ids=list(BAD_RUNS))
def test_bad_run_arguments(case, tmp_path, capsys):
    assert_run_refused(*BAD_RUNS[case], tmp_path, capsys)


def test_cuda_requested_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main([*RUN, "--device", "cuda", "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "no CUDA device is available")


def test_out_not_empty(tmp_path, capsys):
    (tmp_path / "previous.txt").write_text("keep me")
    code = main([*RUN, "--out", str(tmp_path)])
    assert_one_line_error(capsys, code, "exists and is not an empty folder")
    assert [p.name for p in tmp_path.iterdir()] == ["previous.txt"]


def test_missing_dataset(tmp_path, capsys):
    code = main([*RUN, "--dataset", "mnist", "--data-root", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "MNIST not found")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind,expected", [
    ("missing", "no such results file"),
    ("garbage", "not a bench results file"),
    ("foreign", "missing columns"),
    ("future", "schema version"),
])
def test_bad_leaderboard_files(kind, expected, tmp_path, capsys):
    path = results_file(tmp_path, kind) if kind != "missing" else tmp_path / "nope.csv"
    assert_one_line_error(capsys, main(["leaderboard", str(path)]), expected)


def test_unknown_subcommand(capsys):
    assert_one_line_error(capsys, main(["frobnicate"]), "invalid choice")


def test_run_flags_default_to_run_config():
    """RunConfig is the one source of the defaults: `bench run` with no flag is RunConfig()
    (its run folder aside), and the help says RunConfig's values."""
    import dataclasses

    from advbench.cli import build_parser, flag_config
    from advbench.running.config import RunConfig

    parser = build_parser()
    config = flag_config(parser.parse_args(["run"]))
    assert dataclasses.replace(config, out=None) == RunConfig()
    assert config.out is not None  # runs/<timestamp>
    run = next(a for a in parser._actions if a.dest == "command").choices["run"]
    help_text = " ".join(run.format_help().split())
    assert "smoke, cpu (default) or paper" in help_text
    assert "test (default), train or both" in help_text
    assert "'all' or a comma list (default: all)" in help_text
