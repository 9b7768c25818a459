"""Tables that do not mislead (issue #26, point 6): one table per threat model, the worst case
and the attack that reached it first and within one ε, the median norm a minimum-norm attack
needed in every view, per-sample norms in samples.parquet, only the norms given to --eps, the
package's version, `bench list` uncut when not on a terminal."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pandas as pd
import torch

from advbench import Attack, hookimpl, load_registry, run_matrix
from advbench.cli import main
from advbench.running.plan import RunConfig, build_plan


@dataclass(kw_only=True)
class ReportsNorms(Attack):
    """FGSM that reports, per sample, a made-up needed norm: its index in the batch."""

    name = "reports-norms"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        ctx.record["norm_before_projection"] = torch.arange(len(x), dtype=torch.float)
        return x + threat.eps * grad.sign()


class NormsPlugin:
    @hookimpl
    def bench_attacks(self):
        return [ReportsNorms]


def test_needed_norms_are_in_samples_parquet(tmp_path):
    """Each sample's needed norm next to its outcome (NaN where none was reported); the row's
    median_norm is their median."""
    registry = load_registry(extra=[NormsPlugin()])
    run_matrix(attacks="reports-norms,fgsm", defenses="none", registry=registry,
               preset="smoke", n_train=500, n_eval=30, eps={"linf": [0.1]},
               out=tmp_path / "run", cache_dir=tmp_path / "cache")
    rows = pd.read_csv(tmp_path / "run" / "results.csv").set_index("attack")
    samples = pd.read_parquet(tmp_path / "run" / "samples.parquet")
    own = samples[samples["cell_key"] == rows.loc["reports-norms", "cell_key"]]
    attacked = own["clean_correct"]
    assert own.loc[~attacked, "needed_norm"].isna().all()
    assert list(own.loc[attacked, "needed_norm"]) == list(range(int(attacked.sum())))
    assert own.loc[attacked, "needed_norm"].median() == rows.loc["reports-norms", "median_norm"]
    fgsm = samples[samples["cell_key"] == rows.loc["fgsm", "cell_key"]]
    assert fgsm["needed_norm"].isna().all()
    assert "(median norm" in (tmp_path / "run" / "leaderboard.md").read_text()


def test_eps_runs_only_the_norms_given(registry):
    """``--eps linf=0,0.1`` with an L2 attack selected: no L2 cell at its default ε."""
    config = RunConfig(attacks="fgsm,fgm", defenses="none", preset="smoke", n_train=60,
                       n_eval=20, eps={"linf": [0.0, 0.1]}, device="cpu")
    plan = build_plan(config, registry)
    assert plan.eps == {"linf": [0.0, 0.1]}
    assert {(c.attack_name, c.threat.norm) for c in plan.cells} == {("fgsm", "linf")}
    assert main(["run", "--attacks", "fgm", "--eps", "linf=0.1", "--preset", "smoke"]) == 2


def test_eps_help_says_only_the_norms_given(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "only the norms given" in text


def test_list_does_not_truncate_names_when_piped(registry):
    """Not a terminal (COLUMNS=40 or not): every name and description whole, nothing cut."""
    result = subprocess.run([sys.executable, "-m", "advbench.cli", "list"], capture_output=True,
                            text=True, env={"COLUMNS": "40", "PATH": "/usr/bin:/bin"},
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    rows = [[part.strip() for part in line.split("│")] for line in result.stdout.splitlines()]
    for kind in ("attack", "defense"):
        for name, entry in registry.entries[kind].items():
            assert [kind, name] in [row[1:3] for row in rows], name
            assert entry.cls.description in result.stdout, name
