"""The whole matrix on a small slice of real Fashion-MNIST, through the CLI and the API."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sample_plugins
import torch

from advbench import Split, evaluate_model, run_matrix
from advbench.cli import main
from advbench.reporting.results import COLUMNS
from advbench.running.evaluate import predict

SMALL = ["--preset", "smoke", "--n-train", "3000", "--n-eval", "100", "--attacks", "fgsm,fgm",
         "--defenses", "none"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    out, cache = root / "out", root / "cache"
    code = main(["run", *SMALL, "--split", "both", "--out", str(out), "--cache-dir", str(cache)])
    return code, out, cache


def test_run_writes_every_file_with_every_row(cli_run):
    code, out, _ = cli_run
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"results.csv", "results.parquet",
                                                "leaderboard.md", "manifest.json"}
    frame = pd.read_csv(out / "results.csv")
    assert set(COLUMNS) <= set(frame.columns)
    assert len(frame) == 4  # none × {fgsm, fgm} × {test, train}
    assert set(frame["attack"]) == {"fgsm", "fgm"} and set(frame["split"]) == {"test", "train"}
    assert frame["valid"].all() and (frame["status"] == "ok").all()
    for column in ("clean_accuracy", "robust_accuracy", "attack_success_rate"):
        assert frame[column].between(0, 1).all(), column
    assert (frame["robust_accuracy"] < frame["clean_accuracy"]).all()  # the attacks bite
    assert (frame["robust_accuracy_ci_low"] <= frame["robust_accuracy"]).all()
    assert (frame["robust_accuracy"] <= frame["robust_accuracy_ci_high"]).all()
    parquet = pd.read_parquet(out / "results.parquet")
    assert list(parquet.columns) == list(frame.columns)
    assert parquet["robust_accuracy"].tolist() == frame["robust_accuracy"].tolist()


def test_manifest_records_what_determines_the_run(cli_run):
    manifest = json.loads((cli_run[1] / "manifest.json").read_text())
    assert manifest["dataset"] == "fashion-mnist" and manifest["seed"] == 0
    assert manifest["versions"]["torch"] == torch.__version__
    assert "advbench" in manifest["versions"]
    assert set(manifest["samples"]) == {"test", "train"}
    assert len(manifest["samples"]["test"]["sha256"]) == 16
    assert manifest["device"] == "cpu" and manifest["wall_seconds"] > 0


def test_same_command_same_results_and_the_model_is_cached(cli_run, tmp_path):
    _, out, cache = cli_run
    assert len(list(cache.glob("*.safetensors"))) == 1
    again = tmp_path / "again"
    assert main(["run", *SMALL, "--split", "both", "--out", str(again),
                 "--cache-dir", str(cache)]) == 0
    first, second = (pd.read_csv(p / "results.csv").drop(columns="seconds") for p in (out, again))
    pd.testing.assert_frame_equal(first, second)


def test_leaderboard_command_renders_the_results(cli_run, capsys):
    out = cli_run[1]
    assert main(["leaderboard", str(out / "results.csv"), str(out / "results.parquet")]) == 0
    text = capsys.readouterr().out
    assert "| defense" in text and "linf ε=0.1\n" in text and "l2 ε=1.5\n" in text
    assert "| worst case " in text and "| fgsm " in text and "| fgm " in text
    run_board = (out / "leaderboard.md").read_text()
    first_table = text.split("## ")[1]
    assert first_table in run_board


def test_model_given_by_import_path(tmp_path):
    frame = run_matrix(attacks="fgsm", defenses="none", model="sample_models:tiny_mlp",
                       preset="smoke", n_train=2000, n_eval=100, cache_dir=tmp_path)
    assert frame.loc[0, "model"] == "sample_models:tiny_mlp"
    assert 0.3 < frame.loc[0, "clean_accuracy"] <= 1


def test_evaluate_my_own_model(trained_cnn, fashion):
    frame = evaluate_model(trained_cnn, attacks="fgsm,fgm", preset="smoke", n_eval=200)
    assert list(frame["defense"]) == ["none", "none"] and frame["valid"].all()
    # The harness used the model as given: its clean accuracy on the same samples.
    test = frame.attrs["manifest"]["samples"]["test"]
    assert test["n"] == 200
    assert frame.loc[0, "model"] == "Sequential"
    assert (frame["robust_accuracy"] < frame["clean_accuracy"]).all()


def test_a_cheating_attack_is_reported_invalid_not_counted(tmp_path, registry):
    from advbench import load_registry

    reg = load_registry(extra=[sample_plugins])
    frame = run_matrix(attacks="fgsm,too-far,raises", defenses="none,fails-training",
                       registry=reg, preset="smoke", n_train=2000, n_eval=100,
                       cache_dir=tmp_path / "cache", out=tmp_path / "out")
    rows = frame[frame["norm"] == "linf"].set_index(["defense", "attack"])
    assert rows.loc[("none", "fgsm"), "status"] == "ok"
    assert rows.loc[("none", "too-far"), "status"] == "invalid"
    assert pd.isna(rows.loc[("none", "too-far"), "robust_accuracy"])
    assert "exceeds eps" in rows.loc[("none", "too-far"), "invalid_reason"]
    assert rows.loc[("none", "raises"), "status"] == "error"
    assert "boom" in rows.loc[("none", "raises"), "invalid_reason"]
    assert (rows.loc["fails-training", "status"] == "error").all()
    assert "training diverged" in (tmp_path / "out" / "errors.log").read_text()
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "exceeds eps" in board and "invalid [" in board


def test_clean_accuracy_is_the_harness_forward_pass(trained_cnn, fashion):
    x, y = fashion["test"].x[:300], fashion["test"].y[:300]
    expected = float((predict(trained_cnn, x, 100, torch.device("cpu")) == y).float().mean())
    from advbench import ThreatModel
    from advbench.running.evaluate import CellSpec, attack_cell
    from advbench_plugins.fgsm import FGSM

    pred = predict(trained_cnn, x, 100, torch.device("cpu"))
    outcome = attack_cell(trained_cnn, FGSM(), Split(x, y), pred, ThreatModel("linf", 0.0),
                          CellSpec(batch_size=100, device=torch.device("cpu"), seed=0))
    assert float(outcome.clean_correct.float().mean()) == expected
    assert torch.equal(outcome.robust, outcome.clean_correct)  # ε = 0 is clean accuracy
