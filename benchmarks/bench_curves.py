"""#28's acceptance, side by side in one run: the robustness curve of the minimum-norm attacks
against the default run's fixed-ε worst case.

    python -m pytest benchmarks/bench_curves.py -o python_files='bench_*.py' -s

On the default run's own trained models (the cpu preset, the five built-in defenses, the run's
150 samples; the user cache, or ``BENCH_CURVES_CACHE``), it runs:

- the default run, ``bench run --attacks all --defenses all`` as a fresh clone runs it (bench's
  own attacks, not the optional adapters'), for each (defense, norm) its worst-case row;
- ``bench run --attacks fmn-l2,fmn-linf,fab-linf --defenses all``, and reads its curve
  (``radii.parquet``, each sample's smallest adversarial norm) at the default ε: L∞ 0.1, L2 1.5.

Per (defense, norm) it prints both, the 95 % Wilson interval of the worst case, and whether the
curve lies inside it, below it or above it. Above means the minimum-norm attacks miss samples the
fixed-ε attacks break: the test fails. Finished cells come from the cell cache, so a second run
costs seconds.

Measured 2026-12-04 (2 idle cores, the cached default models): inside for all ten pairs, e.g.
adv-train-pgd L2 curve 0.307 against the worst case 0.287 [0.220, 0.364], certified-training L2
0.120 against 0.073 [0.041, 0.127]; with the untargeted FMN at 20 steps (the cpu preset before)
those were 0.460 and 0.407, far above.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from advbench import load_registry, run_matrix
from advbench.reporting.curves import robust_at
from advbench.reporting.results import wilson_interval

DEFENSES = "none,adv-train-fgsm,adv-train-pgd,certified-training,gaussian-smoothing"
EPS = {"linf": 0.1, "l2": 1.5}
MINIMUM_NORM = "fmn-l2,fmn-linf,fab-linf"
ADAPTERS = ("torchattacks-adapter", "art-adapter")  # optional extras a fresh clone lacks
CACHE = Path(os.environ["BENCH_CURVES_CACHE"]) if os.environ.get("BENCH_CURVES_CACHE") else None


def test_minimum_norm_curves_meet_the_default_worst_case(tmp_path: Path) -> None:
    registry = load_registry()
    own = sorted(name for name, entry in registry.entries["attack"].items()
                 if entry.source.distribution == "advbench"
                 and entry.source.plugin not in ADAPTERS)
    eps = {norm: [value] for norm, value in EPS.items()}
    default = run_matrix(attacks=",".join(own), defenses=DEFENSES, eps=eps,
                         out=tmp_path / "default", cache_dir=CACHE, registry=registry)
    run_matrix(attacks=MINIMUM_NORM, defenses=DEFENSES, eps=eps, out=tmp_path / "curves",
               cache_dir=CACHE, registry=registry)
    radii = pd.read_parquet(tmp_path / "curves" / "radii.parquet")
    rows = []
    for (defense, norm), part in radii.groupby(["defense", "norm"]):
        worst = default[(default["defense"] == defense) & (default["norm"] == norm)
                        & (default["attack"] == "worst-case")]
        n, value = len(part), float(robust_at(part["attack_radius"].to_numpy(),
                                              np.array([EPS[norm]]))[0])
        low, high = wilson_interval(round(float(worst["robust_accuracy"].iloc[0]) * n), n)
        rows.append({"defense": defense, "norm": norm, "curve": value,
                     "worst_case": float(worst["robust_accuracy"].iloc[0]), "low": low,
                     "high": high, "where": "above" if value > high
                     else "below" if value < low else "inside"})
    table = pd.DataFrame(rows)
    print("\n" + table.round(3).to_string(index=False))
    assert len(table) == 10
    assert (table["where"] != "above").all(), table[table["where"] == "above"]
