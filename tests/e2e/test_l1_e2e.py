"""A third party's L1 attack through a whole run: cells at the dataset's default L1 ε, graded
by the harness's L1 gate (a perturbation 1 % over ε makes its cell invalid), a worst-case row
for the norm, and the leaderboard written."""

from __future__ import annotations

import sys

import pytest
from support.l1 import L1Step

from advbench import Attack, hookimpl, load_registry, run_matrix


class L1Half(L1Step):
    """The same step at half the budget: a second honest attack, for the worst case."""

    name = "l1-half"

    def run(self, oracle, x, y, threat, ctx):
        return x + (super().run(oracle, x, y, threat, ctx) - x) * 0.5


class L1Over(L1Step):
    """The same step, 1 % over ε wherever the box lets it be."""

    name = "l1-over"

    def run(self, oracle, x, y, threat, ctx):
        return x + (super().run(oracle, x, y, threat, ctx) - x) * 1.01


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [L1Step, L1Half, L1Over]


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory, trained_cnn):
    registry = load_registry(extra=[sys.modules[__name__]])
    out = tmp_path_factory.mktemp("l1-run")
    frame = run_matrix(attacks="l1-step,l1-half,l1-over,fgsm", defenses="none",
                       model=trained_cnn, registry=registry, preset="smoke", n_eval=40,
                       batch_size=20, out=out,
                       cache_dir=tmp_path_factory.mktemp("l1-cache"))
    return frame, out


def test_l1_cells_run_at_the_dataset_default_and_the_gate_grades_them(l1_run):
    frame, _ = l1_run
    rows = frame.set_index(["attack", "norm"])
    honest = rows.loc[("l1-step", "l1")]
    assert honest["eps"] == 10.0 and honest["status"] == "ok", honest["invalid_reason"]
    assert honest["robust_accuracy"] <= honest["clean_accuracy"]
    cheat = rows.loc[("l1-over", "l1")]
    assert cheat["status"] != "ok" and "l1 norm" in cheat["invalid_reason"]
    assert rows.loc[("fgsm", "linf"), "eps"] == 0.1  # the other norms keep their own ε


def test_the_l1_worst_case_and_the_leaderboard(l1_run):
    frame, out = l1_run
    rows = frame[frame["norm"] == "l1"].set_index("attack")
    assert rows.loc["l1-step", "clean_accuracy"] > 0.5  # a trained model, not chance
    assert rows.loc["l1-half", "robust_accuracy"] >= rows.loc["l1-step", "robust_accuracy"]
    assert rows.loc["worst-case", "robust_accuracy"] <= rows.loc["l1-step", "robust_accuracy"]
    assert "l1 ε=10" in (out / "leaderboard.md").read_text()
