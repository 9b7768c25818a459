"""The cell cache: finished cells shared across runs, so that a new run folder reads a cell
that some earlier run computed instead of attacking again.

One ``<key>.parquet`` per cell: its per-sample outcome as columns, its row and what the driver
needs of the defended model afterwards (certified samples, training history, smoothing curve)
as JSON in the file's metadata. The key (``Keys.cache_key``) hashes everything that
determines the cell; an entry that cannot be read, or names another key, is not trusted, and
one whose row disagrees with its own per-sample outcome (a hand edit) is dropped with a warning
and computed again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open

from advbench._util import write_atomic
from advbench.errors import UsageError
from advbench.reporting.reading import validate_results
from advbench.running.evaluate import CellOutcome
from advbench.running.model_cache import history_problem

FORMAT = 1
METADATA = b"advbench.cell"
OUTCOME_COLUMNS = ("clean_correct", "adv_pred", "labels", "queries")


@functools.cache
def code_version() -> str:
    """bench's version and a hash of its own source (core and built-in plugins): an edited
    checkout keeps its version number, and must not reuse cells its old code computed."""
    digest = hashlib.sha256(dist_version("advbench").encode())
    for package in ("advbench", "advbench_plugins"):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def json_value(value: Any) -> Any:
    """numpy scalars (rows read back by pandas) as their Python value."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass
class CachedCell:
    """A finished cell: its row, its per-sample outcome (None for an invalid cell), and the
    defended model's share the driver uses after the cell: ``certified`` samples at the cell's
    ε, and ``extras`` (``history``: training curves, ``curve``: smoothing's certified curve)."""

    row: dict[str, Any]
    outcome: CellOutcome | None
    certified: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def outcome_problem(row: Mapping[str, Any], outcome: CellOutcome) -> str | None:
    """Why ``row`` is not the row of ``outcome`` (None: it is): its sample count and its clean
    and robust accuracy are counted again on the per-sample outcome kept with it, so that a hand
    edit of either side is caught rather than published."""
    n = len(outcome.labels)
    counted = {"n_samples": n, "clean_accuracy": int(outcome.clean_correct.sum()) / n,
               "robust_accuracy": int(outcome.robust.sum()) / n}
    for column, value in counted.items():
        try:
            same = math.isclose(float(row[column]), value, abs_tol=1e-9)
        except (KeyError, TypeError, ValueError):
            same = False
        if not same:
            stored: Any = row.get(column)
            stored = stored.item() if hasattr(stored, "item") else stored  # numpy scalar
            return f"{column} is {stored!r} but its {n} per-sample outcomes give {value:.6g}"
    return None


def identity_problem(row: Mapping[str, Any], expect: Mapping[str, Any]) -> str | None:
    """Why ``row`` is not the row of the cell ``expect`` describes (its dataset, model, defense,
    attack, norm, ε, split, seed and cell key; None: it is): an edited name or ε is published
    under the run's own cell otherwise."""
    for column, value in expect.items():
        stored = row.get(column)
        if isinstance(stored, str) != isinstance(value, str) or stored != value:
            return f"{column} is {stored!r}, not this cell's {value!r}"
    return None


def type_problem(raw: Mapping[str, Any], row: pd.Series) -> str | None:
    """Why the stored ``raw`` row holds text where the results hold a number (None: it does
    not): the row published is the stored one, and a number as text fails the sanity battery."""
    for column, value in raw.items():
        if isinstance(value, str) and column in row and pd.api.types.is_number(row[column]):
            return f"{column} is the text {value!r}, not a number"
    return None


def entry_problem(cell: CachedCell, labels: torch.Tensor | None,
                  expect: Mapping[str, Any] | None = None) -> str | None:
    """Why a cached cell cannot be published (None: it can): its row must be that of the cell
    ``expect`` describes, pass the results files' checks (ranges, robust <= clean, intervals)
    with numbers stored as numbers, agree with its per-sample outcome, have one exactly when
    valid, be graded on ``labels`` (the run's), and keep a readable history."""
    problem = identity_problem(cell.row, expect or {})
    if problem is not None:
        return problem
    try:
        row = validate_results(pd.DataFrame([cell.row]), Path("entry")).iloc[0]
    except UsageError as exc:
        return str(exc).removeprefix("entry row 1, ").split("; fix or")[0]
    problem = type_problem(cell.row, row)
    if problem is not None:
        return problem
    if bool(row["valid"]) != (cell.outcome is not None):
        return "valid and its per-sample outcome disagree"
    if cell.outcome is None:
        return history_problem(cell.extras.get("history"))
    if labels is not None and not torch.equal(cell.outcome.labels, labels):
        return "its labels are not this run's evaluation labels"
    return (outcome_problem(row, cell.outcome)
            or history_problem(cell.extras.get("history")))


class CellCache:
    """Finished cells as ``<root>/<key>.parquet``, written atomically (two runs writing the same
    cell leave one whole entry); a corrupt entry reads as missing and is overwritten, and an
    entry that fails ``entry_problem`` is reported to ``warn`` and computed again."""

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.warn = warn or (lambda line: None)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.parquet"

    def store(self, key: str, cell: CachedCell) -> None:
        columns: dict[str, Any] = {}
        if cell.outcome is not None:
            columns = {name: getattr(cell.outcome, name).numpy() for name in OUTCOME_COLUMNS}
            if cell.certified is not None:
                columns["certified"] = cell.certified.numpy()
            if cell.outcome.needed_norm is not None:
                columns["needed_norm"] = cell.outcome.needed_norm.numpy()
        meta = {"format": FORMAT, "key": key, "row": cell.row, "extras": cell.extras,
                "samples": cell.outcome is not None}
        table = pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)
        table = table.replace_schema_metadata({
            **(table.schema.metadata or {}), METADATA: json.dumps(meta, default=json_value)})
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(key), lambda path: pq.write_table(table, path))

    def load(self, key: str, labels: torch.Tensor | None = None,
             expect: Mapping[str, Any] | None = None) -> CachedCell | None:
        """The cached cell, or None when there is none, or none that can be trusted;
        ``labels``: the run's evaluation labels, which the entry must have been graded on;
        ``expect``: the columns naming the cell, which its row must hold."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[METADATA])
            if meta["format"] != FORMAT or meta["key"] != key:
                return None
            frame = table.to_pandas()
            outcome, certified = None, None
            if meta["samples"]:
                column = {name: torch.from_numpy(frame[name].to_numpy().copy())
                          for name in frame.columns}
                clean, adv_pred, graded_on, queries = (column[n] for n in OUTCOME_COLUMNS)
                outcome = CellOutcome(clean, adv_pred, graded_on, queries,
                                      needed_norm=column.get("needed_norm"))
                certified = column.get("certified")
            cell = CachedCell(dict(meta["row"]), outcome, certified, dict(meta["extras"]))
        except Exception:  # truncated, foreign or hand-edited: the cell is computed again
            return None
        problem = entry_problem(cell, labels, expect)
        if problem is not None:
            self.warn(f"[yellow]cell cache entry {path.name} dropped ({problem}): computing "
                      "the cell again[/yellow]")
            return None
        return cell


# What each cache holds: its entries' and files' extensions. bench names every file after a key
# (``content_key``: 20 hex digits), and ``write_atomic``'s temporaries ``.<name>.<random>.tmp``.
ENTRIES = {"models": "safetensors", "cells": "parquet"}
FILES = {"models": ("safetensors", "history.json"), "cells": ("parquet",)}
NAME = re.compile(r"(?P<dot>\.?)(?P<key>[0-9a-f]{20})\.(?P<ext>safetensors|history\.json|parquet)"
                  r"(?P<tmp>\.[A-Za-z0-9_]+\.tmp)?")


def entry_key(path: Path) -> str | None:
    """The key an entry's own metadata names (None: not one bench wrote, or unreadable)."""
    try:
        if path.suffix == ".parquet":
            return json.loads(pq.read_schema(path).metadata[METADATA])["key"]
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {})["key"]
        return hashlib.sha256(text.encode()).hexdigest()[:20]  # content_key of those parts
    except Exception:
        return None


def bench_wrote(kind: str, path: Path) -> bool:
    """Whether bench wrote ``path`` into the ``kind`` cache: a name of bench's format, and for
    an entry, metadata naming the same key (a user's own files there are never touched)."""
    found = NAME.fullmatch(path.name)
    if found is None or found["ext"] not in FILES[kind] or bool(found["dot"]) != bool(
            found["tmp"]):
        return False
    return (found["tmp"] is not None or found["ext"] == "history.json"
            or entry_key(path) == found["key"])


def cache_files(kind: str, root: Path) -> list[Path]:
    """The cache's own files in ``root`` (not recursive: ``--cache-dir`` may hold others)."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_file() and bench_wrote(kind, path))


def cache_usage(kind: str, root: Path) -> tuple[int, int]:
    """Entries and bytes of one cache."""
    files = cache_files(kind, root)
    return (sum(path.name.endswith("." + ENTRIES[kind]) for path in files),
            sum(path.stat().st_size for path in files))


def clear_cache(kind: str, root: Path) -> tuple[int, int]:
    """Delete one cache's files (only those bench wrote); the entries and bytes freed."""
    entries, size = cache_usage(kind, root)
    for path in cache_files(kind, root):
        path.unlink(missing_ok=True)
    return entries, size
