"""Result rows, their schema, and files written atomically as each cell ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from advbench._util import write_atomic

if TYPE_CHECKING:
    from advbench.running.evaluate import CellOutcome

SCHEMA_VERSION = 1
WORST_CASE_ROW = "worst-case"  # the attack column of a worst-case row

# L2 radii at which randomized-smoothing cells report certified accuracy (and its figure).
RADIUS_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def radius_columns(radius: float) -> tuple[str, str, str]:
    """Certified accuracy at an L2 radius, and its 95 % interval."""
    name = f"certified_l2_r{radius}"
    return name, f"{name}_ci_low", f"{name}_ci_high"


COLUMNS = [
    "dataset", "model", "defense", "attack", "norm", "eps", "split", "n_samples",
    "clean_accuracy", "clean_accuracy_ci_low", "clean_accuracy_ci_high",
    "robust_accuracy", "robust_accuracy_ci_low", "robust_accuracy_ci_high",
    "attack_success_rate", "targeted", "targeted_success_rate", "queries_mean",
    "queries_success_mean", "queries_success_median", "query_budget", "median_norm",
    "median_radius", "median_certified_radius", "median_radius_gap",
    "eot_samples", "prediction_draws", "adaptive", "cascade", "grading",
    "batch_size", "certified_accuracy", "certified_accuracy_ci_low", "certified_accuracy_ci_high",
    "certifier", "certified_broken", "abstain_rate",
    *(column for radius in RADIUS_GRID for column in radius_columns(radius)),
    "broken_by", "flags", "zero_grad_fraction",
    "valid", "status", "invalid_reason", "seconds", "seed", "attack_config", "defense_config",
    "cell_key", "schema_version",
]
TEXT_COLUMNS = {"dataset", "model", "defense", "attack", "norm", "split", "targeted", "adaptive",
                "cascade", "grading",
                "certifier", "broken_by", "flags", "status", "invalid_reason", "attack_config",
                "defense_config", "cell_key"}
REQUIRED = ["dataset", "model", "defense", "attack", "norm", "eps", "split", "n_samples",
            "clean_accuracy", "robust_accuracy", "attack_success_rate", "valid",
            "invalid_reason", "schema_version"]


def blank_row() -> dict[str, Any]:
    """Every column, empty: "" for text, NaN for numbers (a cell fills in what it measured)."""
    return {column: "" if column in TEXT_COLUMNS else float("nan") for column in COLUMNS}


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (NaN when there are no samples)."""
    if n == 0:
        return float("nan"), float("nan")
    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def cell_row(identity: dict[str, Any], *, outcome: CellOutcome | None = None,
             seconds: float = 0.0, error: str | None = None) -> dict[str, Any]:
    """A cell's row: its ``identity`` (the columns naming it, ``Keys.identity``), what its
    per-sample ``outcome`` grades to, and its status: ``error`` (the cell raised, or never ran)
    first, else the outcome's own invalid reason, else ok."""
    row = {**blank_row(), **identity, "seconds": round(seconds, 3),
           "schema_version": SCHEMA_VERSION}
    nan = float("nan")
    if outcome is not None:
        n = row["n_samples"] = len(outcome.labels)  # the graded samples, not a rebound split
        clean, robust = int(outcome.clean_correct.sum()), int(outcome.robust.sum())
        row["clean_accuracy"] = clean / n
        low, high = wilson_interval(clean, n)
        row.update(clean_accuracy_ci_low=low, clean_accuracy_ci_high=high)
    if outcome is not None and outcome.invalid_reason is None:
        attacked = outcome.clean_correct  # in a cascade, not the samples it skipped
        if outcome.skipped is not None:
            attacked = attacked & ~outcome.skipped
        row["robust_accuracy"] = robust / n
        low, high = wilson_interval(robust, n)
        row.update(robust_accuracy_ci_low=low, robust_accuracy_ci_high=high)
        row["attack_success_rate"] = (clean - robust) / clean if clean else nan
        row["queries_mean"] = (float(outcome.queries[attacked].float().mean())
                               if attacked.any() else nan)
        fooled = outcome.queries[attacked & ~outcome.adv_correct].float()
        if len(fooled):
            row.update(queries_success_mean=float(fooled.mean()),
                       queries_success_median=float(fooled.median()))
        needed = outcome.needed_norm
        if needed is not None and bool((~needed.isnan()).any()):
            row["median_norm"] = float(np.median(needed[~needed.isnan()].numpy()))
    reason = error or (outcome.invalid_reason if outcome else None)
    row["valid"] = reason is None
    row["status"] = "ok" if reason is None else ("error" if error else "invalid")
    row["invalid_reason"] = reason or ""
    return row


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[c for c in COLUMNS if c in frame.columns] +
                         [c for c in frame.columns if c not in COLUMNS])


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """results.csv and results.parquet, rewritten whole after each cell."""
    frame = to_frame(rows)
    write_atomic(folder / "results.csv", lambda p: frame.to_csv(p, index=False))
    write_atomic(folder / "results.parquet", lambda p: frame.to_parquet(p, index=False))
