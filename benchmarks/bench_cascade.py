"""The cascade against the full matrix: its time, and whether its worst case is as low.

    python -m pytest benchmarks/bench_cascade.py -o python_files='bench_*.py' --benchmark-enable -s

bench's own attacks at the cpu preset's sizes (150 evaluation samples; the preset cascades by
default since #25, so both modes are asked for by name) against ``none`` and
``adv-train-fgsm`` trained on 10 000 images (``BENCH_CASCADE_FULL=1``: every defense on the whole
split, the README's first line). The models are trained once; then the full matrix and the
cascade each compute every cell (the model cache is shared, the cell cache is not), one after
the other in this process, and the cells' seconds are compared. The worst cases should agree up
to the randomness of the random attacks, which see other batches in a cascade.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from advbench import load_registry, run_matrix

# bench's own attacks, as a fresh clone's --attacks all (the optional adapters' left out).
ATTACKS = ",".join(sorted(
    name for name, entry in load_registry().entries["attack"].items()
    if entry.source.distribution == "advbench"
    and entry.source.plugin not in ("torchattacks-adapter", "art-adapter")))
FULL = os.environ.get("BENCH_CASCADE_FULL") == "1"
SIZE = {} if FULL else dict(defenses="none,adv-train-fgsm", n_train=10_000)


def cells_seconds(frame: pd.DataFrame) -> float:
    return float(frame.attrs["manifest"]["phases"]["cells"])


def worst_cases(frame: pd.DataFrame) -> pd.Series:
    rows = frame[frame["attack"] == "worst-case"]
    return rows.set_index(["defense", "norm", "eps"])["robust_accuracy"]


def test_cascade_against_the_full_matrix(tmp_path: Path) -> None:
    common = dict(attacks=ATTACKS, **SIZE)
    run_matrix(**common, out=tmp_path / "train", cache_dir=tmp_path / "trained")
    frames = {}
    for cascade in (False, True):  # the models only: every cell is computed again
        cache = tmp_path / f"cache-{cascade}"
        shutil.copytree(tmp_path / "trained", cache, ignore=shutil.ignore_patterns("cells"))
        frames[cascade] = run_matrix(**common, cascade=cascade, out=tmp_path / str(cascade),
                                     cache_dir=cache)
    full, cascade = frames[False], frames[True]
    table = pd.DataFrame({"full": worst_cases(full), "cascade": worst_cases(cascade)})
    table["difference"] = table["cascade"] - table["full"]
    print("\nworst-case robust accuracy\n" + table.to_string())
    flags = {name: int(frame["flags"].str.contains("black-box").sum())
             for name, frame in frames.items()}
    print(f"black-box-beats-white-box flags: full {flags[False]}, cascade {flags[True]}")
    seconds = cells_seconds(full), cells_seconds(cascade)
    print(f"cells: full matrix {seconds[0]:.1f} s, cascade {seconds[1]:.1f} s "
          f"({seconds[0] / seconds[1]:.2f}x faster)")
    by = {name: frame.attrs["manifest"]["phases"]["cells_by"] for name, frame in frames.items()}
    print(pd.DataFrame({"full": by[False], "cascade": by[True]}).round(1).to_string())
    assert (table["difference"].abs() <= 0.05).all()  # 150 samples: a few random-attack flips
