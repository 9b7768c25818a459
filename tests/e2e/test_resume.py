"""Nothing lost: an interrupted run, started again, ends with the results of an uninterrupted
one, recomputing only the cells that had not finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sample_plugins

from advbench import UsageError, load_registry, run_matrix
from advbench.cli import main
from advbench.running.worker import Worker

SMALL = dict(preset="smoke", n_train=2000, n_eval=100)


def results(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "results.parquet").drop(columns="seconds")


def models_only(cache: Path, copy: Path) -> None:
    """A copy of a cache without its cells: the trained model is loaded, every cell computed."""
    shutil.copytree(cache, copy, ignore=shutil.ignore_patterns("cells"))


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch):
    registry = load_registry(extra=[sample_plugins])
    common = dict(attacks="fgm,fgsm,interrupter,random-sign", defenses="none",
                  registry=registry, isolation="none", **SMALL)  # its Ctrl-C, in the harness
    run_matrix(out=tmp_path / "full", cache_dir=tmp_path / "full-cache", **common)
    models_only(tmp_path / "full-cache", tmp_path / "cache")  # its cells must not be read

    cut = dict(out=tmp_path / "cut", cache_dir=tmp_path / "cache", **common)
    monkeypatch.setitem(sample_plugins.INTERRUPT, "armed", True)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the third cell
        run_matrix(**cut)
    assert list(pd.read_csv(tmp_path / "cut" / "results.csv")["attack"]) == ["fgm", "fgsm"]

    monkeypatch.setitem(sample_plugins.INTERRUPT, "armed", False)
    attacked = []
    original = Worker.run_cell
    monkeypatch.setattr(Worker, "run_cell", lambda self, cell, *a: attacked.append(
        cell.attack_name) or original(self, cell, *a))
    run_matrix(resume=True, **cut)
    assert attacked == ["interrupter", "random-sign"]  # only the cells that had not finished
    pd.testing.assert_frame_equal(results(tmp_path / "cut"), results(tmp_path / "full"))
    resumed, full = (json.loads((tmp_path / run / "manifest.json").read_text())
                     for run in ("cut", "full"))
    assert (resumed["resumed_cells"], full["resumed_cells"], resumed["reused_cells"]) == (2, 0, 0)
    assert resumed["figures"] and sorted(resumed["figures"]) == sorted(full["figures"])


def test_a_different_config_is_not_resumed_silently(tmp_path):
    run_matrix(attacks="fgsm", defenses="none", out=tmp_path / "run",
               cache_dir=tmp_path / "cache", **SMALL)
    with pytest.raises(UsageError, match="another configuration"):
        run_matrix(attacks="fgm", defenses="none", out=tmp_path / "run",
                   cache_dir=tmp_path / "cache", **SMALL)


def test_kill_9_then_resume_loses_nothing(tmp_path):
    command = [sys.executable, "-m", "advbench.cli", "run", "--preset", "smoke",
               "--n-train", "2000", "--n-eval", "100", "--attacks", "fgm,fgsm,pgd-l2,pgd-linf",
               "--defenses", "none"]
    env = {**os.environ, "BENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    subprocess.run([*command, "--out", str(tmp_path / "full"), "--cache-dir",
                    str(tmp_path / "full-cache")], env=env, check=True, capture_output=True)
    models_only(tmp_path / "full-cache", tmp_path / "cache")  # the cut run computes its cells
    cut = tmp_path / "cut"
    process = subprocess.Popen([*command, "--out", str(cut), "--cache-dir",
                                str(tmp_path / "cache")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (cut / "results.csv").exists() and len(pd.read_csv(cut / "results.csv")) >= 1:
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail("the run ended before it could be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(pd.read_csv(cut / "results.csv"))
    assert 1 <= finished < 5
    assert main(["run", "--resume", str(cut)]) == 0
    pd.testing.assert_frame_equal(results(cut), results(tmp_path / "full"))


def test_out_of_memory_retries_with_smaller_batches(tmp_path):
    registry = load_registry(extra=[sample_plugins])
    frame = run_matrix(attacks="fgsm,needs-small-batches", defenses="none", registry=registry,
                       batch_size=100, cache_dir=tmp_path, **SMALL)
    rows = frame.set_index("attack")
    assert rows.loc["needs-small-batches", "status"] == "ok"
    assert rows.loc["needs-small-batches", "batch_size"] <= 12
    assert rows.loc["needs-small-batches", "robust_accuracy"] == rows.loc["fgsm",
                                                                            "robust_accuracy"]
