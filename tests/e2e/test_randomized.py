"""Randomized defenses, evaluated honestly: EOT, reproducible noise, certified columns."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from advbench import ThreatModel, hookimpl, load_registry, run_matrix
from advbench.algorithms.smoothing import SmoothedClassifier
from advbench.reporting.results import RADIUS_GRID, radius_columns
from advbench.running.evaluate import CellSpec, attack_cell, is_randomized, predict
from advbench.running.worker import Worker
from advbench_plugins.gaussian_smoothing import GaussianSmoothing
from advbench_plugins.pgd_l2 import PGDL2


@dataclass(kw_only=True)
class SmallSmoothing(GaussianSmoothing):
    """Gaussian smoothing with few votes, so that tests stay quick."""

    name = "small-smoothing"
    n0: int = 20
    n: int = 100
    m: int = 1


class SmallSmoothingPlugin:
    @hookimpl
    def bench_defenses(self):
        return [SmallSmoothing]


def test_eot_lowers_the_robust_accuracy_of_a_smoothed_model(trained_cnn, fashion):
    """One noisy gradient per step flatters smoothing; averaging 16 draws (EOT) attacks it."""
    model = SmoothedClassifier(trained_cnn, 0.25, n0=20, n=100, m=1, seed=0).eval()
    data = fashion["test"].subset(torch.arange(300))
    assert is_randomized(model, data.x[:8])
    model.reseed(1)
    clean = predict(model, data.x, 100, torch.device("cpu"))
    robust = {}
    for eot in (1, 16):
        model.reseed(2)
        outcome = attack_cell(model, PGDL2(steps=10), data, clean, ThreatModel("l2", 1.0),
                              CellSpec(batch_size=100, device=torch.device("cpu"), seed=0,
                              eot_samples=eot))
        robust[eot] = int(outcome.robust.sum())
    assert robust[16] < robust[1]


@pytest.fixture(scope="module")
def smoothing_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smooth")
    registry = load_registry(extra=[SmallSmoothingPlugin()])
    frame = run_matrix(attacks="fgm,pgd-l2", defenses="small-smoothing", registry=registry,
                       preset="smoke", n_train=2000, n_eval=60, out=root / "out",
                       cache_dir=root / "cache")
    return frame, root


def test_randomized_defense_gets_eot_and_certified_l2_columns(smoothing_run):
    frame, root = smoothing_run
    assert (frame["eot_samples"] == 8).all()
    l2 = frame[frame["norm"] == "l2"]
    assert (l2["certifier"] == "randomized-smoothing").all()
    assert l2["certified_accuracy"].between(0, 1).all()
    assert (l2["abstain_rate"] >= 0).all()
    assert (root / "out" / "figures" / "certified_small-smoothing_test.png").is_file()
    cells = frame[frame["attack"] != "worst-case"]  # every norm: the grid belongs to the model
    grid = [cells[radius_columns(r)[0]] for r in RADIUS_GRID]
    for name, low, high in map(radius_columns, RADIUS_GRID):
        assert ((cells[low] <= cells[name]) & (cells[name] <= cells[high])).all()
    for smaller, larger in itertools.pairwise(grid):  # certified accuracy falls with the radius
        assert (larger <= smaller).all()
    assert grid[0].notna().all() and (l2["certified_accuracy"] <= l2[grid[-1].name]).all()


def test_smoothing_run_is_reproducible_and_resumes_identically(smoothing_run, tmp_path,
                                                               monkeypatch):
    frame, root = smoothing_run
    registry = load_registry(extra=[SmallSmoothingPlugin()])
    common = dict(attacks="fgm,pgd-l2", defenses="small-smoothing", registry=registry,
                  preset="smoke", n_train=2000, n_eval=60)
    # Ctrl-C in the second cell, then --resume: every cell is computed again (the cut run has
    # a cell cache of its own, the trained model only) and draws the noise of the run in one go.
    shutil.copytree(root / "cache", tmp_path / "cache", ignore=shutil.ignore_patterns("cells"))
    cut = dict(out=tmp_path / "cut", cache_dir=tmp_path / "cache", **common)
    run_cell = Worker.run_cell

    def interrupted(self, cell, *args):
        if cell.attack_name == "pgd-l2":
            raise KeyboardInterrupt
        return run_cell(self, cell, *args)

    monkeypatch.setattr(Worker, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_matrix(**cut)
    monkeypatch.setattr(Worker, "run_cell", run_cell)
    resumed = run_matrix(resume=True, **cut)
    assert resumed.attrs["manifest"]["resumed_cells"] == 1
    assert resumed.attrs["manifest"]["reused_cells"] == 0
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), frame.drop(columns="seconds"))
