"""The cell cache: finished cells shared across runs, so that a new run folder reads a cell
that some earlier run computed instead of attacking again.

One ``<key>.parquet`` per cell: its per-sample outcome as columns, its row and what the driver
needs of the defended model afterwards (certified samples, training history, smoothing curve)
as JSON in the file's metadata. The key (``Worker.cache_key``) hashes everything that
determines the cell; an entry that cannot be read, or names another key, is not trusted.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from advbench.reporting.results import write_atomic
from advbench.running.evaluate import CellOutcome

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


class CellCache:
    """Finished cells as ``<root>/<key>.parquet``, written atomically (two runs writing the same
    cell leave one whole entry); a corrupt entry reads as missing and is overwritten."""

    def __init__(self, root: Path) -> None:
        self.root = root

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

    def load(self, key: str) -> CachedCell | None:
        """The cached cell, or None when there is none, or none that can be trusted."""
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
                outcome = CellOutcome(*(column[name] for name in OUTCOME_COLUMNS),
                                      needed_norm=column.get("needed_norm"))
                certified = column.get("certified")
            return CachedCell(dict(meta["row"]), outcome, certified, dict(meta["extras"]))
        except Exception:  # truncated, foreign or hand-edited: the cell is computed again
            return None


# What each cache holds: its entries, and the files that go with them.
ENTRIES = {"models": "*.safetensors", "cells": "*.parquet"}
FILES = {"models": ("*.safetensors", "*.history.json", "*.tmp"), "cells": ("*.parquet", "*.tmp")}


def cache_files(kind: str, root: Path) -> list[Path]:
    """The cache's own files in ``root`` (not recursive: ``--cache-dir`` may hold others)."""
    return sorted({path for pattern in FILES[kind] for path in root.glob(pattern)
                   if path.is_file()})


def cache_usage(kind: str, root: Path) -> tuple[int, int]:
    """Entries and bytes of one cache."""
    files = cache_files(kind, root)
    return (sum(path.match(ENTRIES[kind]) for path in files),
            sum(path.stat().st_size for path in files))


def clear_cache(kind: str, root: Path) -> tuple[int, int]:
    """Delete one cache's files; the entries and bytes freed."""
    entries, size = cache_usage(kind, root)
    for path in cache_files(kind, root):
        path.unlink(missing_ok=True)
    return entries, size
