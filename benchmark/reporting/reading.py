"""Reading results files back: every number checked before it is published again, and runs
merged into one leaderboard only when they graded the same samples the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advbench.errors import BenchError, UsageError
from advbench.reporting.results import (
    RADIUS_GRID,
    REQUIRED,
    SCHEMA_VERSION,
    WORST_CASE_ROW,
    radius_columns,
)


def read_results(path: Path) -> pd.DataFrame:
    """Read one results file (CSV or parquet) written by bench, validated: every loader gets a
    frame whose numbers can be published, or a UsageError."""
    if not path.is_file():
        raise UsageError(f"{path}: no such results file")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        else:
            raise UsageError(f"{path}: expected a .csv or .parquet results file")
    except BenchError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: not a readable results file ({type(exc).__name__})") from exc
    if frame.empty:
        raise UsageError(f"{path}: holds no result rows (only a header); regenerate it")
    return validate_results(frame, path)


TEXT = ["dataset", "model", "defense", "attack", "norm", "split"]  # a cell's identity
NOTES = ["status", "invalid_reason", "flags"]  # text the leaderboard prints: "" when empty
INTERVALS = ["clean_accuracy", "robust_accuracy", "certified_accuracy",
             *(radius_columns(radius)[0] for radius in RADIUS_GRID)]
FRACTIONS = [*(column for name in INTERVALS for column in (name, f"{name}_ci_low",
                                                           f"{name}_ci_high")),
             "attack_success_rate", "targeted_success_rate", "abstain_rate",
             "zero_grad_fraction"]
COUNTS = ["n_samples", "query_budget", "certified_broken", "eot_samples", "prediction_draws",
          "batch_size", "seed", "schema_version"]
NON_NEGATIVE = ["eps", "queries_mean", "queries_success_mean", "queries_success_median",
                "seconds"]
# >= 0; inf: never broken (curves.py), or no adversarial example found (median_norm)
RADII = ["median_norm", "median_radius", "median_certified_radius"]
GAPS = ["median_radius_gap"]  # any number: negative only where a certificate is contradicted
NEEDED = ["eps", "n_samples", "schema_version"]  # numbers every row must have
STATUSES = ("ok", "invalid", "error")
SLACK = 1e-6  # rounding of intervals written as text


class Rows:
    """Names a row as a user finds it: a CSV's line (the header is line 1), a parquet's row."""

    def __init__(self, frame: pd.DataFrame, path: Path) -> None:
        self.frame, self.path, self.csv = frame, path, path.suffix == ".csv"

    def error(self, bad: pd.Series, column: str, problem: str) -> None:
        """Raise naming the first row where ``bad`` holds, if any, and its value there."""
        if not bool(bad.any()):
            return
        position = int(np.flatnonzero(bad.to_numpy(dtype=bool))[0])
        place = f"line {position + 2}" if self.csv else f"row {position + 1}"
        value = self.frame[column].iloc[position]
        shown = repr(value.item() if isinstance(value, np.generic) else value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise UsageError(f"{self.path} {place}, column {column} = {shown}: {problem}; fix or "
                         "regenerate the file")


def as_numbers(frame: pd.DataFrame, rows: Rows) -> None:
    """Numeric columns as float64; text where a number belongs is refused, never coerced."""
    for column in [c for c in FRACTIONS + COUNTS + NON_NEGATIVE + RADII + GAPS
                   if c in frame.columns]:
        scalars = frame[column].map(lambda v: v if np.isscalar(v) or v is None else "?")
        numbers = pd.to_numeric(scalars, errors="coerce").astype("float64")
        rows.error(frame[column].notna() & numbers.isna(), column, "not a number")
        frame[column] = numbers


def check_numbers(frame: pd.DataFrame, rows: Rows) -> None:
    """Ranges: fractions in [0, 1], counts whole and >= 0, ε and query counts finite >= 0."""
    for column in NEEDED:
        rows.error(frame[column].isna(), column, "empty; every row needs it")
    for column in [c for c in FRACTIONS if c in frame.columns]:
        rows.error(~frame[column].between(0, 1) & frame[column].notna(), column,
                   "outside [0, 1]")
    for column in [c for c in COUNTS + NON_NEGATIVE if c in frame.columns]:
        values = frame[column]
        rows.error(values.notna() & ~(np.isfinite(values) & (values >= 0)), column,
                   "must be a finite number >= 0")
        if column in COUNTS:
            rows.error(values.notna() & ((values != values.round()) | (values > 2**53)),
                       column, "must be a whole number (at most 2**53)")
    for column in [c for c in RADII if c in frame.columns]:
        rows.error(frame[column] < 0, column, "a radius must be >= 0")
    version = frame["schema_version"]
    rows.error(version > SCHEMA_VERSION, "schema_version",
               f"results schema version is newer than this bench's {SCHEMA_VERSION}; "
               "upgrade bench")
    rows.error(version < 1, "schema_version", "results schema version must be >= 1")


def as_flags(frame: pd.DataFrame, rows: Rows) -> None:
    """``valid`` as booleans (True/False, any case, or 1/0) and the printed text columns."""
    words = frame["valid"].astype(str).str.strip().str.lower()
    mapped = words.map({"true": True, "false": False, "1": True, "0": False,
                        "1.0": True, "0.0": False})
    rows.error(mapped.isna(), "valid", "must be True or False")
    frame["valid"] = mapped.astype(bool)
    for column in TEXT:
        rows.error(frame[column].isna() | (frame[column].astype(str).str.strip() == ""),
                   column, "empty; every row needs it")
        frame[column] = frame[column].astype(str)
    for column in [c for c in NOTES if c in frame.columns]:
        frame[column] = frame[column].where(frame[column].notna(), "").astype(str)


def check_consistency(frame: pd.DataFrame, rows: Rows) -> None:
    """Status agrees with ``valid``; a valid row has robust <= clean and each value inside its
    interval (a hand edit that breaks these would publish an impossible number)."""
    valid = frame["valid"]
    if "status" in frame.columns:
        status = frame["status"]
        rows.error(~status.isin(STATUSES), "status", f"must be one of {', '.join(STATUSES)}")
        rows.error(valid != (status == "ok"), "status",
                   "disagrees with valid (valid rows are ok, the others invalid or error)")
    for column in ("clean_accuracy", "robust_accuracy"):
        rows.error(valid & frame[column].isna(), column, "empty in a valid row")
    rows.error(valid & (frame["robust_accuracy"] > frame["clean_accuracy"] + SLACK),
               "robust_accuracy", "above clean_accuracy in a valid row (robust samples are "
               "among the correct ones)")
    for name in [c for c in INTERVALS if c in frame.columns]:
        for bound, sign, side in ((f"{name}_ci_low", 1, "below"),
                                  (f"{name}_ci_high", -1, "above")):
            if bound in frame.columns:
                rows.error(sign * (frame[bound] - frame[name]) > SLACK, name,
                           f"{side} {bound}: outside its own interval")


def check_counts(frame: pd.DataFrame, rows: Rows) -> None:
    """Accuracies are counts over ``n_samples`` (0.62 of 7 samples is no count), and
    ``broken_by`` is a JSON object of attack → whole number of samples, at most ``n_samples``."""
    n = frame["n_samples"]
    rows.error(n < 1, "n_samples", "below 1: an accuracy is a count over at least one sample")
    for column in ("clean_accuracy", "robust_accuracy"):
        count = frame[column] * n
        rows.error((count - count.round()).abs() > 1e-6 + 1e-9 * n, column,
                   "not a whole number of the row's n_samples (a count over them)")
    if "broken_by" not in frame.columns:
        return
    text = frame["broken_by"].where(frame["broken_by"].notna(), "").astype(str).str.strip()

    def bad(value: str, n: float) -> bool:
        if not value:
            return False
        try:
            counts = json.loads(value)
        except ValueError:
            return True
        return not isinstance(counts, dict) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= n
            for c in counts.values())

    rows.error(pd.Series([bad(v, m) for v, m in zip(text, n, strict=True)], index=frame.index),
               "broken_by", "not a JSON object of attack → samples broken (0..n_samples)")


THREAT = ["dataset", "model", "defense", "norm", "eps", "split", "targeted", "seed"]


def check_worst_cases(frame: pd.DataFrame, rows: Rows) -> None:
    """A valid worst-case row is at most each valid attack of its threat model (a sample it
    counts robust withstood every attack)."""
    keys = frame[[c for c in THREAT if c in frame.columns]].astype(object).fillna("")
    worst = frame["attack"] == WORST_CASE_ROW
    robust = frame["robust_accuracy"].where(frame["valid"] & ~worst, np.inf)
    bound = robust.groupby([keys[c].astype(str) for c in keys.columns]).transform("min")
    rows.error(frame["valid"] & worst & (frame["robust_accuracy"] > bound + SLACK),
               "robust_accuracy", "above the robust accuracy of an attack of its threat model "
               "(a worst case is at most each attack's)")


def validate_results(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The one check of a loaded results frame: required columns, types and invariants. Returns
    a normalized copy (numbers as floats, ``valid`` as booleans, text as str) or raises a
    UsageError naming the file, the row and the column of the first problem."""
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise UsageError(f"{path}: not a bench results file (missing columns: "
                         f"{', '.join(missing)})")
    frame = frame.reset_index(drop=True).copy()
    rows = Rows(frame, path)
    as_numbers(frame, rows)
    check_numbers(frame, rows)
    for column in [c for c in COUNTS if c in frame.columns and frame[c].notna().all()]:
        frame[column] = frame[column].astype("int64")
    as_flags(frame, rows)
    check_consistency(frame, rows)
    check_counts(frame, rows)
    check_worst_cases(frame, rows)
    return frame


CELL = ["dataset", "model", "defense", "attack", "norm", "eps", "split"]  # one leaderboard cell
UNCOMPARED = {"seconds"}  # differs between two runs of the same cell; says nothing about it


def is_missing(value: Any) -> bool:
    """NaN, None or "": a CSV writes all three as an empty field."""
    return bool(pd.isna(value)) or (isinstance(value, str) and not value)


def same_value(a: Any, b: Any) -> bool:
    """Both missing, or the same number to 12 digits, or the same text: a CSV's 3 and a
    parquet's "3" (the ``targeted`` class), or its text and a parquet's float, agree."""
    if is_missing(a) or is_missing(b):
        return is_missing(a) and is_missing(b)
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-12, atol=0.0))
    except (TypeError, ValueError):
        return str(a) == str(b)


def cell_name(row: pd.Series) -> str:
    return (f"{row['dataset']} · {row['model']} · {row['split']} · {row['defense']} × "
            f"{row['attack']} {row['norm']} ε={row['eps']:g}")


def check_duplicates(frame: pd.DataFrame, paths: list[Path], columns: list[str]) -> None:
    """Refuse a cell given twice with different values, naming it, both files and a column."""
    duplicated = frame[frame.duplicated(CELL, keep=False)]
    for _, group in duplicated.groupby(CELL, sort=False):
        first = group.iloc[0]
        for _, other in group.iloc[1:].iterrows():
            differing = [c for c in columns if not same_value(first[c], other[c])]
            if not differing:
                continue
            column = differing[0]
            a, b = paths[first["_source"]], paths[other["_source"]]
            where = f"twice in {a}" if a == b else f"in {a} and {b}"
            raise UsageError(f"cell {cell_name(first)} is {where} with different {column} "
                             f"({first[column]} vs {other[column]}): drop one, or pass "
                             "--prefer first|last")


def beside_manifest(path: Path) -> dict[str, Any]:
    """The manifest.json of the run a results file lies in ({} when there is none to read)."""
    try:
        manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def evaluation_sets(path: Path, frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """What a results file was evaluated on, per dataset and split: its sample counts, and the
    samples' hashes (indices and data) when its run's manifest lies beside it."""
    manifest = beside_manifest(path)
    samples = manifest.get("samples")
    samples = samples if isinstance(samples, dict) else {}
    found = {}
    for (dataset, split), part in frame.groupby(["dataset", "split"], sort=False):
        record = samples.get(split) if manifest.get("dataset") == dataset else None
        hashes = {k: v for k, v in record.items() if k != "n"} if isinstance(record, dict) else {}
        found[(dataset, split)] = {"n": sorted(set(part["n_samples"].tolist())), **hashes}
    return found


def check_same_samples(loaded: list[tuple[Path, pd.DataFrame]]) -> None:
    """Files merged into one leaderboard must have evaluated each dataset's split on the same
    samples: a worst case across two evaluation sets is no worst case of either."""
    first: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    for path, frame in loaded:
        for where, record in evaluation_sets(path, frame).items():
            seen, before = first.setdefault(where, (path, record))
            for key in [k for k in record if k in before and record[k] != before[k]][:1]:
                shown = {"n": "n_samples", "sha256": "sample indices", "data": "sample data"}
                raise UsageError(
                    f"{seen} and {path} evaluate {where[0]} ({where[1]}) on different samples "
                    f"({shown.get(key, key)}: {before[key]} vs {record[key]}): merge only runs "
                    "of the same data, --n-eval and --seed")


def check_manifest(frame: pd.DataFrame, manifest: dict[str, Any], path: Path) -> None:
    """A manifest is shown only above the results of its own run: its dataset, model, seed,
    splits with their sample counts, and ε must be those of every row."""
    def refuse(what: str) -> None:
        raise UsageError(f"--manifest {path} is not the manifest of these results ({what}); "
                         "pass the manifest.json of the run they come from")

    for column in ("dataset", "model", "seed"):
        if column in manifest and column in frame.columns:
            expected = manifest[column]
            other = frame[column][[not same_value(v, expected) for v in frame[column]]]
            if len(other):
                refuse(f"{column} {manifest[column]} there, {other.iloc[0]} in the results")
    samples, eps = manifest.get("samples"), manifest.get("eps")
    for _, row in frame.iterrows():
        record = samples.get(row["split"]) if isinstance(samples, dict) else None
        if isinstance(samples, dict) and not (isinstance(record, dict)
                                              and same_value(record.get("n"), row["n_samples"])):
            refuse(f"no {row['split']} split of {row['n_samples']} samples there")
        values = eps.get(row["norm"]) if isinstance(eps, dict) else None
        if isinstance(eps, dict) and not (isinstance(values, list) and any(
                same_value(v, row["eps"]) for v in values)):
            refuse(f"no {row['norm']} ε={row['eps']:g} there")


def combine_results(loaded: list[tuple[Path, pd.DataFrame]],
                    prefer: str | None = None) -> pd.DataFrame:
    """One frame from several validated results frames. A cell found more than once must say
    the same thing each time (then it is kept once), or ``prefer`` (``first`` or ``last``)
    names whose row wins whole: never one column from one file and another from the other."""
    if prefer not in (None, "first", "last"):
        raise UsageError(f"prefer {prefer!r}: choose first or last")
    check_same_samples(loaded)
    paths = [path for path, _ in loaded]
    frame = pd.concat([part.assign(_source=i) for i, (_, part) in enumerate(loaded)],
                      ignore_index=True)
    if prefer is None:
        shared = set.intersection(*(set(part.columns) for _, part in loaded)) - UNCOMPARED
        check_duplicates(frame, paths, [c for c in frame.columns if c in shared])
    frame = frame.drop_duplicates(CELL, keep=prefer or "first")
    return frame.drop(columns="_source").reset_index(drop=True)
