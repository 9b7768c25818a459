"""``--set PLUGIN.KEY=V[,V...]``: plugin arguments from the command line, one variant per value."""

from __future__ import annotations

import json

import pandas as pd
from helpers import RUN
from rich.console import Console

from advbench import run_matrix
from advbench.cli import main
from advbench.reporting.leaderboard import to_rich


def test_each_value_runs_as_a_named_variant(tmp_path):
    """Two σ of smoothing train two models and give two defenses; two PGD step counts give
    two attacks; each row records the arguments it ran with."""
    cache = tmp_path / "cache"
    frame = run_matrix(preset="smoke", n_train=1000, epochs=1, n_eval=40, attacks="pgd-l2",
                       defenses="gaussian-smoothing", cache_dir=cache, eot_samples=1,
                       options={"gaussian-smoothing": {"sigma": [0.25, 0.5], "n": 20},
                                "pgd-l2": {"steps": [1, 5]}})
    cells = frame[frame["attack"] != "worst-case"]
    assert sorted(set(cells["defense"])) == ["gaussian-smoothing(sigma=0.25,n=20)",
                                             "gaussian-smoothing(sigma=0.5,n=20)"]
    assert sorted(set(cells["attack"])) == ["pgd-l2(steps=1)", "pgd-l2(steps=5)"]
    for _, row in cells.iterrows():
        defense, attack = json.loads(row["defense_config"]), json.loads(row["attack_config"])
        assert row["defense"] == f"gaussian-smoothing(sigma={defense['sigma']},n=20)"
        assert defense["n"] == 20
        assert row["attack"] == f"pgd-l2(steps={attack['steps']})"
    assert len(list(cache.glob("*.safetensors"))) == 2
    assert cells["valid"].all() and len(cells) == 4
    narrow = Console(width=60, record=True)
    for table in to_rich(frame):
        narrow.print(table)
    assert "…" not in narrow.export_text()  # variant names folded on narrow terminals, never cut


def test_a_run_with_arguments_resumes_with_them(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = [*RUN, "--attacks", "pgd-linf", "--n-eval", "30", "--n-train", "1000",
            "--set", "pgd-linf.steps=1,3", "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    first = pd.read_csv(out / "results.csv")
    assert main(["run", "--resume", str(out)]) == 0
    again = pd.read_csv(out / "results.csv")
    assert list(again["attack"]) == list(first["attack"])
    assert set(first["attack"]) == {"pgd-linf(steps=1)", "pgd-linf(steps=3)", "worst-case"}
    assert list(again["cell_key"]) == list(first["cell_key"])


def test_variants_of_wrapper_fields_share_one_trained_model(tmp_path):
    """Smoothing's n sizes PREDICT, not training: two n give two rows but one model."""
    cache = tmp_path / "cache"
    frame = run_matrix(preset="smoke", n_train=1000, epochs=1, n_eval=20, attacks="fgm",
                       defenses="gaussian-smoothing", cache_dir=cache, eot_samples=1,
                       options={"gaussian-smoothing": {"n": [10, 30]}})
    cells = frame[frame["attack"] != "worst-case"]
    assert sorted(cells["defense"]) == ["gaussian-smoothing(n=10)", "gaussian-smoothing(n=30)"]
    assert len(list(cache.glob("*.safetensors"))) == 1
