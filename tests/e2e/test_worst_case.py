"""The per-sample worst case, targeted mode and ε sweeps, through the runner."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sample_plugins
import torch

from advbench import ThreatModel, UsageError, load_registry, run_matrix
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench.running.plan import choose_targets
from advbench.running.worker import targeted_success
from advbench_plugins.fgsm import FGSM

SMALL = dict(preset="smoke", n_train=3000, n_eval=150)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    registry = load_registry(extra=[sample_plugins])
    frame = run_matrix(attacks="fgsm,random-sign", defenses="none", registry=registry,
                       eps={"linf": [0.0, 0.05, 0.1, 0.2]}, out=root / "out",
                       cache_dir=root / "cache", **SMALL)
    return frame, root / "out"


def test_worst_case_is_per_sample_not_the_minimum_of_averages(sweep):
    frame, out = sweep
    samples = pd.read_parquet(out / "samples.parquet")
    for _, cells in frame[frame["norm"] == "linf"].groupby("eps"):
        by_attack = cells.set_index("attack")
        worst = by_attack.loc["worst-case"]
        assert worst["robust_accuracy"] <= by_attack.loc[["fgsm", "random-sign"],
                                                         "robust_accuracy"].min()
        robust = samples.pivot(index="sample", columns="cell_key", values="robust")
        both = robust[by_attack.loc["fgsm", "cell_key"]] & robust[
            by_attack.loc["random-sign", "cell_key"]]
        assert worst["robust_accuracy"] == pytest.approx(both.mean())
        assert robust[worst["cell_key"]].equals(both)
        broken = json.loads(worst["broken_by"])
        clean = round(worst["clean_accuracy"] * worst["n_samples"])
        fgsm_broken = clean - round(by_attack.loc["fgsm", "robust_accuracy"] * 150)
        assert broken["fgsm"] == fgsm_broken


def test_eps_zero_is_clean_accuracy_and_accuracy_falls_with_eps(sweep):
    frame, _ = sweep
    fgsm = frame[frame["attack"] == "fgsm"].sort_values("eps")
    assert fgsm.iloc[0]["eps"] == 0 and fgsm.iloc[0]["robust_accuracy"] == \
        fgsm.iloc[0]["clean_accuracy"]
    assert fgsm["robust_accuracy"].is_monotonic_decreasing


def test_eps_sweep_figure_is_written_and_linked(sweep):
    _, out = sweep
    figure = out / "figures" / "eps_sweep_none_test.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figures/eps_sweep_none_test.png" in (out / "leaderboard.md").read_text()


def test_targeted_mode_reports_target_hits(tmp_path):
    frame = run_matrix(attacks="fgsm", defenses="none", targeted="random",
                       eps={"linf": [0.3]}, cache_dir=tmp_path, **SMALL)
    row = frame.iloc[0]
    assert row["targeted"] == "random" and 0 <= row["targeted_success_rate"] <= 1


def test_targets_reach_the_attack(trained_cnn, fashion):
    """Targeted FGSM lands on its targets far more often than untargeted FGSM does."""
    data = fashion["test"].subset(torch.arange(400))
    pred = predict(trained_cnn, data.x, 200, torch.device("cpu"))
    targets = choose_targets("random", trained_cnn, data, 10, 200, torch.device("cpu"), 0)
    hits = {}
    for name, given in (("targeted", targets), ("untargeted", None)):
        outcome = attack_cell(trained_cnn, FGSM(), data, pred, ThreatModel("linf", 0.3),
                              CellSpec(batch_size=200, device=torch.device("cpu"), seed=0,
                              targets=given))
        hits[name] = targeted_success(outcome, targets)
    assert hits["targeted"] > 1.5 * hits["untargeted"]


@pytest.mark.parametrize("attacks,mode,message", [
    ("fgsm", "42", "class index"),
    ("fgsm", "sideways", "choose random, least-likely"),
    ("fgsm,random-sign", "random", "random-sign cannot run targeted"),
])
def test_targeted_bad_input(attacks, mode, message, tmp_path):
    registry = load_registry(extra=[sample_plugins])
    with pytest.raises(UsageError, match=message):
        run_matrix(attacks=attacks, defenses="none", targeted=mode, registry=registry,
                   cache_dir=tmp_path, **SMALL)
