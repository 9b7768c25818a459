"""Minimum-norm attacks in a cascade (#28): they run outside the chain, on every correctly
classified sample, so each sample gets its radius (the robustness curve's, ``median_radius``),
they feed no skip to a chained attack, and the worst case still counts what they broke.

One plan, three ways: the cascade as it is now; the cascade as it was (FMN declared not
minimum-norm, so a chained attack like any other, on what the attacks before it left); and the
full matrix. Every attack here is deterministic per sample, so the three worst cases can be
compared sample by sample."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from advbench import load_registry, run_matrix
from advbench.running.worker import Worker
from advbench_plugins.fmn_linf import FMNLinf

EPS = 0.1
# Before, the cascade ran FMN after pgd-linf (same rank, the order of --attacks) on what it left;
# now FMN runs last too, but on every sample.
COMMON = dict(preset="smoke", n_eval=200, defenses="none",
              attacks="pgd-linf,fmn-linf,fgsm", eps={"linf": [EPS]},
              options={"pgd-linf": {"random_start": False}})
PGD = "pgd-linf(random_start=False)"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name → (results, per-sample outcomes, per-sample radii) for ``now``, ``before`` (FMN in
    the chain) and ``full`` (no cascade), on one trained model; ``root``: their folder."""
    root = tmp_path_factory.mktemp("min_norm_cascade")
    found = {"root": root}
    for name, cascade, declared in (("now", True, True), ("before", True, False),
                                    ("full", False, True)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(FMNLinf, "minimum_norm", declared)
            frame = run_matrix(registry=load_registry(), cascade=cascade, out=root / name,
                               cache_dir=root / "cache", **COMMON)
        found[name] = (frame.set_index("attack"), pd.read_parquet(root / name / "samples.parquet"),
                       pd.read_parquet(root / name / "radii.parquet").set_index("sample"))
    return found


def outcome(run, attack: str) -> pd.DataFrame:
    frame, samples, _ = run
    key = frame.loc[attack, "cell_key"]
    return samples[samples["cell_key"] == key].set_index("sample").sort_index()


def test_fmn_runs_last_and_skips_nothing_while_the_chain_still_skips(runs):
    frame, _, _ = runs["now"]
    assert list(frame.index) == ["fgsm", PGD, "fmn-linf", "worst-case"]
    # The chained attacks ran as before: FMN fed them no skip, then as now.
    assert frame.loc[PGD, "cell_key"] == runs["before"][0].loc[PGD, "cell_key"]
    fgsm, pgd, fmn = (outcome(runs["now"], a) for a in ("fgsm", PGD, "fmn-linf"))
    clean = fmn["clean_correct"]
    broken_by_chain = clean & ~pgd["robust"]  # the chain's row is cumulative
    assert broken_by_chain.sum() > 10  # the test would prove nothing otherwise
    # FMN attacked every correctly classified sample, those the chain broke included ...
    assert (fmn.loc[clean, "queries"] > 0).all()
    assert (fmn["adv_pred"] != -1).all()
    assert fmn.loc[clean, "needed_norm"].notna().all()
    assert fmn.loc[~clean, "needed_norm"].isna().all()
    # ... while pgd-linf still skipped what FGSM broke.
    skipped = clean & ~fgsm["robust"]
    assert skipped.any() and (pgd.loc[skipped, "queries"] == 0).all()


def test_the_fmn_cell_is_the_full_matrix_cell(runs):
    now, full = runs["now"][0], runs["full"][0]
    assert now.loc["fmn-linf", "cell_key"] == full.loc["fmn-linf", "cell_key"]
    assert now.loc["fmn-linf", "robust_accuracy"] == full.loc["fmn-linf", "robust_accuracy"]
    here, there = outcome(runs["now"], "fmn-linf"), outcome(runs["full"], "fmn-linf")
    assert here["robust"].equals(there["robust"])
    assert np.array_equal(here["needed_norm"], there["needed_norm"], equal_nan=True)


def test_every_correctly_classified_sample_has_its_radius_and_the_median_is_not_eps(runs):
    now, _, radii = runs["now"]
    clean = radii["clean_correct"].astype(bool)
    assert radii.loc[clean, "minimum_norm"].notna().all()
    assert (radii.loc[~clean, "attack_radius"] == 0).all()
    # A sample the chain broke at ε has FMN's radius where FMN found one below ε, else ε.
    pgd, fmn = outcome(runs["now"], PGD), outcome(runs["now"], "fmn-linf")
    broken = clean & ~pgd["robust"]
    expected = np.minimum(fmn.loc[broken, "needed_norm"].to_numpy(float), EPS)
    assert np.allclose(radii.loc[broken, "attack_radius"].to_numpy(float), expected)
    assert (radii.loc[broken, "attack_radius"] < EPS).sum() >= 3
    assert now.loc["worst-case", "median_radius"] < EPS  # was ε itself before
    # Before, the samples the chain broke were not FMN's: no radius of their own, ε itself.
    before, _, radii_before = runs["before"]
    skipped = clean & ~outcome(runs["before"], PGD)["robust"]
    assert skipped.sum() >= 10  # the test would prove nothing otherwise
    assert radii_before.loc[skipped, "minimum_norm"].isna().all()
    assert (radii_before.loc[skipped, "attack_radius"] == EPS).all()
    assert now.loc["worst-case", "median_radius"] <= before.loc["worst-case", "median_radius"]


def test_the_worst_case_counts_fmn_and_is_no_higher_than_before(runs):
    now, before, full = (runs[name][0] for name in ("now", "before", "full"))
    worst = {name: outcome(runs[name], "worst-case")["robust"]
             for name in ("now", "before", "full")}
    pgd, fmn = outcome(runs["now"], PGD), outcome(runs["now"], "fmn-linf")
    # The union: robust only where the chain and FMN both failed.
    assert worst["now"].equals(pgd["robust"] & fmn["robust"])
    assert not (worst["now"] & ~worst["before"]).any()  # robust now ⇒ robust before
    assert now.loc["worst-case", "robust_accuracy"] <= before.loc["worst-case", "robust_accuracy"]
    # Deterministic attacks: the same per-sample union as the full matrix's.
    assert worst["now"].equals(worst["full"])
    assert now.loc["worst-case", "robust_accuracy"] == full.loc["worst-case", "robust_accuracy"]


def test_the_cascade_column_says_fmn_ran_apart(runs):
    now, before = runs["now"][0], runs["before"][0]
    assert now.loc["fgsm", "cascade"] == "fgsm"
    assert now.loc[PGD, "cascade"] == f"fgsm > {PGD}"
    assert now.loc["fmn-linf", "cascade"] == ""  # its own robust accuracy, not cumulative
    assert now.loc["worst-case", "cascade"] == f"fgsm > {PGD} (+ fmn-linf on every sample)"
    assert before.loc["fmn-linf", "cascade"] == f"fgsm > {PGD} > fmn-linf"
    fmn = outcome(runs["now"], "fmn-linf")
    broken_by = json.loads(now.loc["worst-case", "broken_by"])
    assert broken_by["fmn-linf"] == int((fmn["clean_correct"] & ~fmn["robust"]).sum())


def test_against_a_randomized_defense_the_minimum_norm_attack_stays_in_its_place():
    """Against gaussian-smoothing FMN is chained like any iterative gradient attack (the order
    of --attacks within its rank), before the black-box ones; against none it runs last."""
    from advbench.running.plan import RunConfig, build_plan

    plan = build_plan(RunConfig(attacks="fmn-l2,pgd-l2,random-search",
                                defenses="none,gaussian-smoothing", eps={"l2": [1.5]},
                                cascade=True), load_registry())
    order = {name: [c.attack_name for c in plan.cells if c.defense.name == name]
             for name in ("none", "gaussian-smoothing")}
    assert order["none"] == ["pgd-l2", "random-search", "fmn-l2"]
    assert order["gaussian-smoothing"] == ["fmn-l2", "pgd-l2", "random-search"]


def test_a_resumed_cascade_reruns_nothing_and_gives_the_same_rows(runs, monkeypatch):
    """Resumed, FMN's cell is found again (it skipped nothing, whatever the chain fooled) and
    the rows come back as they were, cascade columns included."""
    attacked = []
    original = Worker.run_cell
    monkeypatch.setattr(Worker, "run_cell", lambda self, cell, *a: attacked.append(
        cell.attack_name) or original(self, cell, *a))
    again = run_matrix(registry=load_registry(), cascade=True, out=runs["root"] / "now",
                       cache_dir=runs["root"] / "cache", resume=True, **COMMON)
    assert attacked == []
    columns = ["cell_key", "robust_accuracy", "broken_by", "cascade", "flags", "median_radius"]
    pd.testing.assert_frame_equal(again.set_index("attack")[columns], runs["now"][0][columns])
