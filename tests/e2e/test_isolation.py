"""Isolated attacks (#29): a third-party attack runs in a process of its own, which holds no
model, no labels, no tally and no gate. Each cheat of the issue, as a third party's plugin,
gives an ``invalid`` or ``error`` cell with its reason; every honest cell of the same run is
bit-identical to a run without the cheaters; honest third-party attacks, run isolated, give the
rows they give in-process; the run ends normally. The attacks are in support/hostile_plugins.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from support.hostile_plugins import CHEATS, HONEST, PROTOCOL_BREAKERS, third_party

from advbench import load_registry, run_matrix
from advbench.attack import AttackContext
from advbench.oracle import Oracle
from advbench.running.isolation import AttackProcess, IsolatedFailure, IsolatedRunner
from advbench.threat import ThreatModel

SMALL = dict(preset="smoke", n_train=3000, n_eval=40, defenses="none", eps={"linf": [0.1]},
             cascade=False)
BUILT_IN = ("fgsm", "pgd-linf")
HONEST_NAMES = tuple(cls.name for cls in HONEST)
# The thread-leaving cheat comes first: every cell after it must not feel it.
CHEAT_NAMES = ("h-thread", *(cls.name for cls in CHEATS if cls.name != "h-thread"))
COMPARED = ["status", "clean_accuracy", "robust_accuracy", "queries_mean"]


def per_sample(folder: Path, frame: pd.DataFrame, attack: str) -> pd.DataFrame:
    """The cell's per-sample outcome from the run folder's samples.parquet, in sample order."""
    samples = pd.read_parquet(folder / "samples.parquet")
    part = samples[samples["cell_key"] == frame.loc[attack, "cell_key"]]
    return part.sort_values("sample").drop(columns="cell_key").reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on the same trained model: the honest attacks alone, every attack in this
    process (``isolation="none"``); then the cheaters first and the same honest attacks, the
    third-party ones isolated (``auto``), computed again (the cell cache emptied between)."""
    root = tmp_path_factory.mktemp("isolation")
    registry = load_registry(extra=[third_party(*CHEATS, *HONEST)])
    honest = ",".join((*HONEST_NAMES, *BUILT_IN))
    baseline = run_matrix(attacks=honest, registry=registry, out=root / "baseline",
                          cache_dir=root / "cache", isolation="none", **SMALL)
    shutil.rmtree(root / "cache" / "cells")
    hostile = run_matrix(attacks=",".join((*CHEAT_NAMES, *HONEST_NAMES, *BUILT_IN)),
                         registry=registry, out=root / "hostile", cache_dir=root / "cache",
                         cell_timeout=10, attack_memory=4, **SMALL)
    return {"baseline": (baseline.set_index("attack"), root / "baseline"),
            "hostile": (hostile.set_index("attack"), root / "hostile"), "root": root}


@pytest.fixture(scope="module")
def hostile(runs):
    return runs["hostile"][0]


def reason(frame: pd.DataFrame, attack: str) -> str:
    return str(frame.loc[attack, "invalid_reason"])


def test_every_third_party_cell_is_graded_isolated_and_the_built_in_ones_in_process(runs):
    hostile, baseline = runs["hostile"][0], runs["baseline"][0]
    for name in (*CHEAT_NAMES, *HONEST_NAMES):
        assert hostile.loc[name, "grading"] == "isolated", name
    for name in BUILT_IN:
        assert hostile.loc[name, "grading"] == "in-process", name
    assert set(baseline.loc[list(HONEST_NAMES + BUILT_IN), "grading"]) == {"in-process"}


def test_patching_the_gate_at_run_time_patches_the_attack_process_only(hostile):
    """Blank images: the harness's gate, untouched, finds them far outside the ε-ball."""
    assert hostile.loc["h-patch-gate", "status"] == "invalid"
    assert reason(hostile, "h-patch-gate").startswith("perturbation linf norm")
    assert reason(hostile, "h-patch-gate").endswith("exceeds eps 0.1")


def test_a_tensor_subclass_arrives_as_its_plain_data(hostile):
    """x moved by 0.001, its argmax one class off: graded on the data, robust ≈ clean (the
    subclass's argmax would have made it 0)."""
    row = hostile.loc["h-subclass"]
    assert row["status"] == "ok" and row["clean_accuracy"] > 0.3
    assert row["robust_accuracy"] >= row["clean_accuracy"] - 0.05


def test_the_oracle_has_no_model_to_copy(hostile):
    assert hostile.loc["h-deepcopy", "status"] == "error"
    assert "_model" in reason(hostile, "h-deepcopy")
    assert reason(hostile, "h-deepcopy").startswith("attack raised AttributeError")


def test_no_model_lives_in_the_attack_process(hostile):
    """The heap walker finds no model to run PGD on: it returns x unchanged, so every sample
    keeps its clean prediction; it made one query of its budget of 5."""
    row = hostile.loc["h-gc-walk"]
    assert row["status"] == "ok"
    assert row["robust_accuracy"] == row["clean_accuracy"]
    assert row["queries_mean"] == 1.0 and row["query_budget"] == 5


def test_a_thread_left_behind_zeroes_nothing_of_the_harness(hostile):
    row = hostile.loc["h-thread"]
    assert row["status"] == "ok" and row["robust_accuracy"] == row["clean_accuracy"]


def test_sys_exit_is_an_error_row(hostile):
    assert hostile.loc["h-sys-exit", "status"] == "error"
    assert reason(hostile, "h-sys-exit") == "attack called sys.exit(0)"


def test_os_exit_is_an_error_row(hostile):
    assert hostile.loc["h-os-exit", "status"] == "error"
    assert reason(hostile, "h-os-exit") == "the attack's process exited with code 3"


def test_a_segfault_is_an_error_row(hostile):
    assert hostile.loc["h-segfault", "status"] == "error"
    assert reason(hostile, "h-segfault") == "the attack's process killed by signal SIGSEGV"


def test_a_hang_is_a_timeout_row(hostile):
    assert hostile.loc["h-hang", "status"] == "error"
    assert reason(hostile, "h-hang").startswith("timeout")
    assert "--cell-timeout 10 s" in reason(hostile, "h-hang")


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="the attack process's memory limit is not applied where CUDA is")
def test_running_out_of_memory_is_an_error_row(hostile):
    assert hostile.loc["h-memory", "status"] == "error"
    text = reason(hostile, "h-memory").lower()
    assert "memory" in text or "killed" in text


@pytest.mark.parametrize("attack", HONEST_NAMES)
def test_an_honest_third_party_attack_gives_the_same_row_isolated_and_in_process(runs, attack):
    (hostile, hostile_dir), (baseline, baseline_dir) = runs["hostile"], runs["baseline"]
    assert hostile.loc[attack, "status"] == "ok"
    assert hostile.loc[attack, "robust_accuracy"] < hostile.loc[attack, "clean_accuracy"]
    assert hostile.loc[attack, COMPARED].to_dict() == baseline.loc[attack, COMPARED].to_dict()
    pd.testing.assert_frame_equal(per_sample(hostile_dir, hostile, attack),
                                  per_sample(baseline_dir, baseline, attack))


@pytest.mark.parametrize("attack", BUILT_IN)
def test_the_built_in_cells_of_the_hostile_run_are_those_of_a_run_without_cheaters(runs, attack):
    (hostile, hostile_dir), (baseline, baseline_dir) = runs["hostile"], runs["baseline"]
    assert hostile.loc[attack, "status"] == "ok"
    assert hostile.loc[attack, COMPARED].to_dict() == baseline.loc[attack, COMPARED].to_dict()
    pd.testing.assert_frame_equal(per_sample(hostile_dir, hostile, attack),
                                  per_sample(baseline_dir, baseline, attack))


def test_the_worst_case_is_the_honest_attacks_own(runs):
    """No cheat broke a sample the honest attacks left: the worst case over every valid cell
    equals the honest run's (the subclass's 0.001 move breaks none of those here)."""
    (hostile, _), (baseline, _) = runs["hostile"], runs["baseline"]
    worst = [name for name in hostile.index if name not in (*CHEAT_NAMES, *HONEST_NAMES,
                                                            *BUILT_IN)]
    assert worst, "no worst-case row"
    for name in worst:
        assert hostile.loc[name, "robust_accuracy"] == baseline.loc[name, "robust_accuracy"]


def test_the_run_ended_normally_and_wrote_its_files(runs):
    hostile, folder = runs["hostile"]
    assert (folder / "results.csv").is_file() and (folder / "manifest.json").is_file()
    errors = (folder / "errors.log").read_text()  # the attacks' tracebacks, where they raised
    for name in ("h-deepcopy", "h-sys-exit", "h-memory"):
        assert f"== cell none × {name}\n" in errors


def call_with_deadline(runner, attack, oracle, x, y, seconds: float):
    """``runner``'s call in a thread; what it raised or returned, or "hung" past ``seconds``."""
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["result"] = runner(attack, oracle, x, y, ThreatModel("linf", 0.1),
                                       AttackContext(torch.Generator().manual_seed(0)))
        except Exception as exc:
            outcome["result"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome.get("result", "hung")


@pytest.mark.parametrize(("cls", "failure"), zip(PROTOCOL_BREAKERS, (
    "the attack's process broke the protocol: ", "timeout: ", "timeout: "), strict=True),
    ids=("overlong", "half", "no-read"))
def test_bytes_off_the_protocol_cost_the_cell_not_the_harness(tiny, cls, failure):
    """An attack writing a bogus message length, or half a message, on its connection, or
    reading none of the answers to its requests: the harness refuses it, or times the cell
    out, and never waits on it for ever."""
    net, x, y = tiny
    process = AttackProcess(4)
    runner = IsolatedRunner(process, torch.device("cpu"), 0, timeout=5)
    try:
        result = call_with_deadline(runner, cls(), Oracle(net, "gradient", len(x)), x, y, 15)
    finally:
        process.kill()  # frees a harness stuck on the process
    assert isinstance(result, IsolatedFailure), result
    assert str(result).startswith(failure), str(result)


def test_bench_run_survives_an_attack_calling_os_exit(runs, tmp_path):
    """Through the CLI, with the cheat loaded from BENCH_PLUGINS: the run finishes, writes its
    results with the error row, and exits 1 (a cell failed), not 0 with nothing written. (The
    module's runs trained its model: same settings, same cache.)"""
    support = Path(__file__).parents[1] / "support"
    env = {**os.environ, "BENCH_PLUGINS": "hostile_plugins",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(support),
                                                       os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "advbench.cli", "run", "--preset", "smoke", "--n-train", "3000",
         "--n-eval", "40", "--attacks", "h-os-exit,fgsm", "--defenses", "none", "--eps",
         "linf=0.1", "--no-cascade", "--out", str(tmp_path / "run"), "--cache-dir",
         str(runs["root"] / "cache")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "1 cell(s) failed" in done.stdout
    rows = pd.read_csv(tmp_path / "run" / "results.csv").set_index("attack")
    assert rows.loc["h-os-exit", "status"] == "error"
    assert rows.loc["h-os-exit", "invalid_reason"] == "the attack's process exited with code 3"
    assert rows.loc["h-os-exit", "grading"] == "isolated"
    assert rows.loc["fgsm", "status"] == "ok" and rows.loc["fgsm", "grading"] == "in-process"
