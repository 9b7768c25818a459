"""Result rows, their schema, and files written atomically as each cell ends."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from .errors import BenchError

SCHEMA_VERSION = 1

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
    "queries_success_mean", "queries_success_median", "query_budget", "eot_samples", "batch_size",
    "certified_accuracy", "certified_accuracy_ci_low", "certified_accuracy_ci_high",
    "certifier", "certified_broken", "abstain_rate",
    *(column for radius in RADIUS_GRID for column in radius_columns(radius)),
    "broken_by", "flags", "zero_grad_fraction",
    "valid", "status", "invalid_reason", "seconds", "seed", "attack_config", "defense_config",
    "cell_key", "schema_version",
]
REQUIRED = ["dataset", "model", "defense", "attack", "norm", "eps", "split", "n_samples",
            "clean_accuracy", "robust_accuracy", "attack_success_rate", "valid",
            "invalid_reason", "schema_version"]


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (NaN when there are no samples)."""
    if n == 0:
        return float("nan"), float("nan")
    interval = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.reindex(columns=[c for c in COLUMNS if c in frame.columns] +
                         [c for c in frame.columns if c not in COLUMNS])


def write_results(folder: Path, rows: list[dict[str, Any]]) -> None:
    """results.csv and results.parquet, rewritten whole after each cell."""
    frame = to_frame(rows)
    write_atomic(folder / "results.csv", lambda p: frame.to_csv(p, index=False))
    write_atomic(folder / "results.parquet", lambda p: frame.to_parquet(p, index=False))


def read_results(path: Path) -> pd.DataFrame:
    """Read and validate one results file (CSV or parquet) written by bench."""
    if not path.is_file():
        raise BenchError(f"{path}: no such results file")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        else:
            raise BenchError(f"{path}: expected a .csv or .parquet results file")
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"{path}: not a readable results file ({type(exc).__name__})") from exc
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise BenchError(f"{path}: not a bench results file (missing columns: "
                         f"{', '.join(missing)})")
    versions = set(frame["schema_version"].dropna().astype(int))
    if versions - {SCHEMA_VERSION}:
        raise BenchError(f"{path}: results schema version {sorted(versions)} is not "
                         f"{SCHEMA_VERSION}; regenerate it with this bench")
    accuracy = frame[["clean_accuracy", "robust_accuracy"]].apply(pd.to_numeric, errors="coerce")
    bad = ~(accuracy.isna() | ((accuracy >= 0) & (accuracy <= 1)))
    if bool(np.asarray(bad).any()):
        raise BenchError(f"{path}: accuracies outside [0, 1]")
    return frame
