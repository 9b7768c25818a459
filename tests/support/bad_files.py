"""Helpers of tests/unit/test_bad_files.py and tests/e2e/test_bad_files_e2e.py."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from advbench.reporting.results import (
    wilson_interval,
)

PUBLISHED = Path(__file__).resolve().parents[2] / "leaderboard" / "results.csv"


RUN = ["run", "--preset", "smoke", "--attacks", "fgsm", "--defenses", "none",
       "--n-train", "60", "--n-eval", "20"]


def run_args(tmp_path: Path, root: Path, name: str = "out") -> list[str]:
    return [*RUN, "--data-root", str(root), "--out", str(tmp_path / name),
            "--cache-dir", str(tmp_path / "cache")]


def published(rows: int = 8) -> pd.DataFrame:
    """Real rows of the published leaderboard, and one invalid cell."""
    frame = pd.read_csv(PUBLISHED, keep_default_na=False, na_values=[""]).head(rows)
    invalid = frame.iloc[[0]].assign(attack="broken", valid=False, status="invalid",
                                     invalid_reason="norm 0.2 > eps 0.1",
                                     robust_accuracy=math.nan, robust_accuracy_ci_low=math.nan,
                                     robust_accuracy_ci_high=math.nan)
    return pd.concat([frame, invalid], ignore_index=True).astype(object)


def written(tmp_path: Path, frame: pd.DataFrame, name: str = "results.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def rerun(frame: pd.DataFrame, robust: float) -> pd.DataFrame:
    """The same cells, the first with another (self-consistent) robust accuracy."""
    frame = frame.copy()
    n = int(frame.loc[0, "n_samples"])
    low, high = wilson_interval(round(robust * n), n)
    frame.loc[0, ["robust_accuracy", "robust_accuracy_ci_low", "robust_accuracy_ci_high"]] = \
        [robust, low, high]
    return frame
