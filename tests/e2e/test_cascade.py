"""The cascade (``bench run --cascade``, AutoAttack's way): per defense and threat model the
attacks run cheapest first, each only on the samples every earlier one failed on. Its rows are
cumulative, and its worst case is the full matrix's."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sample_plugins

from advbench import load_registry, run_matrix
from advbench.cli import main
from advbench.reporting.leaderboard import to_markdown
from advbench.running.worker import Worker

# pgd-linf from x₀ is deterministic per sample, so the cascade must match the matrix exactly.
COMMON = dict(preset="smoke", n_train=2000, n_eval=100, defenses="none",
              eps={"linf": [0.05, 0.1]}, options={"pgd-linf": {"random_start": False}})
ATTACKS = "score-random-sign,pgd-linf,fgsm"  # listed against the cascade's order
PGD = "pgd-linf(random_start=False)"  # the variant's name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same plan as a full matrix and as a cascade, on one trained model."""
    root = tmp_path_factory.mktemp("cascade")
    registry = load_registry(extra=[sample_plugins])
    frames = {cascade: run_matrix(attacks=ATTACKS, registry=registry, cascade=cascade,
                                  out=root / str(cascade), cache_dir=root / "cache", **COMMON)
              for cascade in (False, True)}
    return frames[False], frames[True], root


def robust_of(root, frame: pd.DataFrame, attack: str, eps: float) -> pd.Series:
    samples = pd.read_parquet(root / "samples.parquet")
    key = frame[(frame["attack"] == attack) & (frame["eps"] == eps)]["cell_key"].iloc[0]
    return samples[samples["cell_key"] == key].set_index("sample")


def test_attacks_run_single_step_first_and_black_box_last(runs):
    _, cascade, _ = runs
    chain = cascade[cascade["eps"] == 0.1].set_index("attack")["cascade"]
    assert chain["fgsm"] == "fgsm"
    assert chain[PGD] == f"fgsm > {PGD}"
    assert chain["score-random-sign"] == chain["worst-case"] == \
        f"fgsm > {PGD} > score-random-sign"
    assert list(cascade[cascade["eps"] == 0.1]["attack"]) == [
        "fgsm", PGD, "score-random-sign", "worst-case"]


def test_a_later_attack_runs_only_on_what_the_earlier_left_and_counts_it_as_fooled(runs):
    full, cascade, root = runs
    for eps in (0.05, 0.1):
        fgsm = robust_of(root / "True", cascade, "fgsm", eps)
        pgd = robust_of(root / "True", cascade, PGD, eps)
        skipped = fgsm["clean_correct"] & ~fgsm["robust"]
        assert skipped.any()  # FGSM fooled some: the test would otherwise prove nothing
        assert (pgd.loc[skipped, "queries"] == 0).all()
        assert (pgd.loc[skipped, "adv_pred"] == -1).all() and not pgd.loc[skipped, "robust"].any()
        assert (pgd.loc[fgsm["robust"], "queries"] > 0).all()
        # Deterministic PGD: per sample, the cascade is the union of the two full cells.
        union = (robust_of(root / "False", full, "fgsm", eps)["robust"]
                 & robust_of(root / "False", full, PGD, eps)["robust"])
        assert pgd["robust"].equals(union)


def test_rows_are_cumulative_and_the_first_is_the_plain_cell(runs):
    full, cascade, _ = runs
    for eps in (0.05, 0.1):
        rows = cascade[cascade["eps"] == eps].set_index("attack")
        plain = full[full["eps"] == eps].set_index("attack")
        assert rows.loc["fgsm", "cell_key"] == plain.loc["fgsm", "cell_key"]
        assert rows.loc["fgsm", "robust_accuracy"] == plain.loc["fgsm", "robust_accuracy"]
        chain = rows.loc[["fgsm", PGD, "score-random-sign"], "robust_accuracy"]
        assert chain.is_monotonic_decreasing
        assert rows.loc["worst-case", "robust_accuracy"] == chain.iloc[-1]
        assert rows.loc[PGD, "cell_key"] != plain.loc[PGD, "cell_key"]


def test_broken_by_counts_each_sample_once_for_the_attack_that_broke_it(runs):
    _, cascade, _ = runs
    for _, row in cascade[cascade["attack"] == "worst-case"].iterrows():
        broken = json.loads(row["broken_by"])
        clean, robust = (round(row[c] * row["n_samples"])
                         for c in ("clean_accuracy", "robust_accuracy"))
        assert sum(broken.values()) == clean - robust
        assert broken["fgsm"] > 0


def test_a_resumed_cascade_reruns_nothing_and_gives_the_same_rows(runs, monkeypatch):
    _, cascade, root = runs
    attacked = []
    original = Worker.run_cell
    monkeypatch.setattr(Worker, "run_cell", lambda self, cell, *a: attacked.append(
        cell.attack_name) or original(self, cell, *a))
    again = run_matrix(attacks=ATTACKS, registry=load_registry(extra=[sample_plugins]),
                       cascade=True, out=root / "True", cache_dir=root / "cache", resume=True,
                       **COMMON)
    assert attacked == []
    columns = ["attack", "eps", "cell_key", "robust_accuracy", "broken_by", "cascade", "flags"]
    pd.testing.assert_frame_equal(again[columns], cascade[columns])


def test_the_leaderboard_says_the_columns_are_cumulative(runs):
    _, cascade, _ = runs
    text = to_markdown(cascade)
    assert f"cascade (fgsm > {PGD} > score-random-sign)" in text
    for row in (line for line in text.splitlines() if line.startswith("| none")):
        assert row.count("[1]") == 2  # each ε's table: every attack column after the first


def test_cascade_is_a_flag_of_bench_run_recorded_in_the_manifest(tmp_path):
    code = main(["run", "--cascade", "--preset", "smoke", "--n-train", "500", "--n-eval", "20",
                 "--attacks", "fgsm,fgm", "--defenses", "none", "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["cascade"] is True
    rows = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(rows["cascade"]) == {"fgsm", "fgm"}  # one attack per threat model


@pytest.mark.parametrize(("preset", "given", "expected"), [
    ("cpu", None, True), ("paper", None, True), ("smoke", None, False),
    ("cpu", False, False), ("smoke", True, True)])
def test_the_preset_decides_the_mode_unless_the_flag_does(preset, given, expected):
    """The default run (cpu) and the published one (paper) cascade; smoke, which checks that
    every attack runs, gives each attack every sample; ``--cascade``/``--no-cascade`` win."""
    from advbench.running.plan import RunConfig, build_plan

    plan = build_plan(RunConfig(attacks="fgsm,pgd-linf", defenses="none", preset=preset,
                                cascade=given), load_registry())
    assert plan.config.cascade is expected


@pytest.mark.parametrize("cascade", [True, False])
def test_a_cascade_runs_autoattacks_randomized_version_against_a_randomized_defense(cascade):
    """Against a defense declaring itself randomized a cascade leaves out the attacks declaring
    ``against_randomized = False`` (APGD-T, FAB), as AutoAttack's version for randomized
    defenses does; other defenses keep them, and so does the full matrix."""
    from advbench.running.plan import RunConfig, build_plan

    plan = build_plan(RunConfig(attacks="fgsm,apgd-ce,apgd-t,fab-linf,fab-t",
                                defenses="none,gaussian-smoothing", eps={"linf": [0.1]},
                                cascade=cascade), load_registry())
    ran = {(c.defense.name, c.attack_name) for c in plan.cells}
    left_out = {(c.defense.name, c.attack_name) for c in plan.left_out}
    assert {("none", name) for name in ("fgsm", "apgd-ce", "apgd-t", "fab-linf", "fab-t")} <= ran
    randomized = {("gaussian-smoothing", name) for name in ("apgd-t", "fab-linf", "fab-t")}
    assert left_out == (randomized if cascade else set())
    assert not left_out & ran
    assert ("gaussian-smoothing", "apgd-ce") in ran


def test_a_chain_of_left_out_attacks_alone_still_runs():
    """Asked for APGD-T alone against a randomized defense, the cascade runs it: leaving it out
    would leave the threat model with no attack."""
    from advbench.running.plan import RunConfig, build_plan

    plan = build_plan(RunConfig(attacks="apgd-t", defenses="gaussian-smoothing",
                                eps={"linf": [0.1]}, cascade=True), load_registry())
    assert [c.attack_name for c in plan.cells] == ["apgd-t"] and not plan.left_out


def test_no_cascade_gives_every_attack_its_own_row_and_the_manifest_says_which(tmp_path):
    """At the default preset without a flag the run cascades; ``--no-cascade`` gives the full
    matrix. The manifest records the mode either way, and the same command started again
    resumes its folder (the recorded config is the decided one)."""
    common = ["--n-train", "500", "--n-eval", "20", "--attacks", "fgsm,pgd-linf",
              "--defenses", "none", "--cache-dir", str(tmp_path / "cache")]
    for flags, name, cascade in (([], "default", True), (["--no-cascade"], "full", False)):
        out = tmp_path / name
        assert main(["run", *common, *flags, "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"]["cascade"] is cascade
        rows = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("attack")
        assert rows.loc["pgd-linf", "cascade"] == ("fgsm > pgd-linf" if cascade else "")
        assert ("cascade (fgsm > pgd-linf)" in (out / "leaderboard.md").read_text()) is cascade
    assert main(["run", *common, "--out", str(tmp_path / "default")]) == 0


def test_the_rows_say_which_attacks_a_randomized_defenses_cascade_left_out(tmp_path):
    """The left-out attacks get no row, and every row of the defense says which they were (the
    leaderboard prints it under the table)."""
    frame = run_matrix(attacks="fgsm,pgd-linf,apgd-t", defenses="gaussian-smoothing",
                       preset="smoke", n_train=1000, n_eval=30, eps={"linf": [0.1]}, cascade=True,
                       out=tmp_path / "run", cache_dir=tmp_path / "cache")
    assert set(frame["attack"]) == {"fgsm", "pgd-linf", "worst-case"}
    note = "the cascade left out apgd-t, as AutoAttack's version for randomized defenses does"
    assert all(note in flags for flags in frame["flags"])
    assert note in (tmp_path / "run" / "leaderboard.md").read_text()
