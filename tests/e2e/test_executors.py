"""Executors: a pool of processes and Ray give the results the in-process run gives, and a
worker that dies mid-cell costs a retry, never a lost or doubled cell."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import sample_plugins
import torch

from advbench import load_registry, run_matrix
from advbench.running.executors import LocalExecutor, ProcessExecutor

TINY = dict(attacks="fgsm,fgm,pgd-linf", defenses="none,gaussian-smoothing", preset="smoke",
            n_train=1000, n_eval=40, seed=3)
# Everything a cell computes; ``seconds`` (and the executor in the manifest) may differ.
COMPARED = ["defense", "attack", "norm", "eps", "split", "cell_key", "clean_accuracy",
            "robust_accuracy", "attack_success_rate", "queries_mean", "certified_accuracy",
            "abstain_rate", "eot_samples", "flags", "broken_by", "valid", "invalid_reason"]
TESTS = Path(__file__).parents[1]


def one_thread_run(tmp_path: Path, name: str, executor, **overrides) -> pd.DataFrame:
    """A run on one torch thread per process, so every executor sums floats in one order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_matrix(**{**TINY, **overrides}, executor=executor, out=tmp_path / name,
                          cache_dir=tmp_path / f"cache-{name}")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_frame(tmp_path_factory) -> pd.DataFrame:
    return one_thread_run(tmp_path_factory.mktemp("local"), "local", LocalExecutor())


def same_results(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(frame) == len(expected) == frame["cell_key"].nunique()
    pd.testing.assert_frame_equal(frame[COMPARED].reset_index(drop=True),
                                  expected[COMPARED].reset_index(drop=True))


def test_processes_give_the_local_results_in_plan_order(tmp_path, local_frame):
    frame = one_thread_run(tmp_path, "processes", ProcessExecutor(2, threads=1))
    same_results(frame, local_frame)
    written = pd.read_csv(tmp_path / "processes" / "results.csv")
    assert list(written["cell_key"]) == list(local_frame["cell_key"])
    assert (tmp_path / "processes" / "figures").is_dir()
    assert any(p.name.startswith("pgd-linf_gaussian-smoothing")
               for p in (tmp_path / "processes" / "figures").iterdir())


def test_isolated_attacks_in_a_pool_give_the_local_in_process_rows(tmp_path, local_frame):
    """Every attack isolated (#29), each pool worker with its own attack process: the rows of
    the in-process local run, and each says it was graded isolated."""
    frame = one_thread_run(tmp_path, "isolated-pool", ProcessExecutor(2, threads=1),
                           isolation="all")
    same_results(frame, local_frame)
    cells = frame[frame["attack"] != "worst-case"]
    assert cells["grading"].eq("isolated").all()
    assert local_frame.loc[local_frame["attack"] != "worst-case", "grading"].eq(
        "in-process").all()


def test_an_isolated_attack_that_exits_costs_its_cell_not_the_worker(tmp_path, monkeypatch):
    """Isolated, ``os._exit`` ends the attack's own process: an error row naming it, the
    pool's worker untouched, the other cell computed."""
    monkeypatch.setenv("BENCH_TEST_DIE_MARKER", str(tmp_path / "died"))
    registry = load_registry(extra=[sample_plugins])
    frame = one_thread_run(tmp_path, "exits", ProcessExecutor(1, threads=1),
                           attacks="fgsm,dies-once", defenses="none", registry=registry)
    rows = frame.set_index("attack")
    assert rows.loc["dies-once", "status"] == "error"
    assert "the attack's process exited with code 1" in rows.loc["dies-once", "invalid_reason"]
    assert rows.loc["fgsm", "status"] == "ok"


def test_a_dying_worker_process_costs_a_retry_not_a_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_TEST_DIE_MARKER", str(tmp_path / "died"))
    registry = load_registry(extra=[sample_plugins])
    frame = one_thread_run(tmp_path, "dies", ProcessExecutor(2, threads=1),
                           attacks="fgsm,dies-once", defenses="none", registry=registry,
                           isolation="none")  # it kills the pool's worker, not its own process
    assert (tmp_path / "died").read_text() == "died"  # a worker did die
    cells = frame[frame["attack"] != "worst-case"]
    assert sorted(cells["attack"]) == ["dies-once", "fgsm"]  # each once
    assert cells["valid"].all()
    reloaded = pd.read_csv(tmp_path / "dies" / "results.csv")
    assert reloaded["cell_key"].is_unique and len(reloaded) == len(frame)


def test_a_failing_defense_fails_its_cells_in_a_pool_too(tmp_path):
    registry = load_registry(extra=[sample_plugins])
    frame = one_thread_run(tmp_path, "fails", ProcessExecutor(1, threads=1),
                           attacks="fgsm", defenses="none,fails-training", registry=registry)
    failed = frame[frame["defense"] == "fails-training"]
    assert len(failed) == 1 and failed["status"].eq("error").all()
    assert "training diverged" in failed["invalid_reason"].iloc[0]
    assert frame[frame["defense"] == "none"]["valid"].all()


def test_a_cascade_in_a_pool_gives_the_local_cascade(tmp_path):
    """A cascade submits each chain's next cell when the one before it comes back, to a pool
    whose defended model is long prepared: the rows are the in-process cascade's."""
    local = one_thread_run(tmp_path, "local-cascade", LocalExecutor(), cascade=True)
    pooled = one_thread_run(tmp_path, "pool-cascade", ProcessExecutor(2, threads=1),
                            cascade=True)
    same_results(pooled, local)
    assert (local["cascade"] == pooled["cascade"]).all()
    assert local["cascade"].str.contains(" > ").any()


def test_a_failing_defense_fails_every_cell_of_its_cascade_in_a_pool(tmp_path):
    registry = load_registry(extra=[sample_plugins])
    frame = one_thread_run(tmp_path, "fails", ProcessExecutor(1, threads=1), cascade=True,
                           attacks="fgsm,pgd-linf", defenses="fails-training", registry=registry)
    assert sorted(frame["attack"]) == ["fgsm", "pgd-linf"]
    assert frame["status"].eq("error").all()
    assert frame["invalid_reason"].str.contains("training diverged").all()


def test_ray_gives_the_local_results_and_survives_a_dying_worker(tmp_path, local_frame,
                                                                  monkeypatch):
    ray = pytest.importorskip("ray")
    marker = tmp_path / "died"
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)  # Ray's workers import the sample plugins
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"BENCH_TEST_DIE_MARKER": str(marker),
                                       "OMP_NUM_THREADS": "1", "PYTHONPATH": path}})
    try:
        frame = one_thread_run(tmp_path, "ray", "ray")
        same_results(frame, local_frame)
        registry = load_registry(extra=[sample_plugins])
        died = one_thread_run(tmp_path, "ray-dies", "ray", attacks="fgsm,dies-once",
                              defenses="none", registry=registry, isolation="none")
    finally:
        ray.shutdown()
    assert marker.read_text() == "died"
    cells = died[died["attack"] != "worst-case"]
    assert sorted(cells["attack"]) == ["dies-once", "fgsm"] and cells["valid"].all()
