"""The run folder: creating it (or refusing one), resuming what an interrupted run finished,
and the manifest that records where every number came from."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from advbench._util import one_line
from advbench.errors import UsageError
from advbench.plugin_system.registry import Registry
from advbench.reporting.reading import validate_results
from advbench.reporting.results import SCHEMA_VERSION
from advbench.running.cell_cache import outcome_problem
from advbench.running.config import RunConfig
from advbench.running.evaluate import CellOutcome
from advbench.running.model_cache import data_fingerprint
from advbench.running.plan import Plan


def config_record(config: RunConfig) -> dict[str, Any]:
    """The config as the manifest stores it (JSON types); ``out``, ``resume`` and ``fresh``
    (which change where results go or come from, not what they are) excluded."""
    record = {key: (str(value) if isinstance(value, Path) else value)
              for key, value in dataclasses.asdict(config).items()}
    return json.loads(json.dumps({k: v for k, v in record.items()
                                  if k not in ("out", "resume", "fresh")}, default=str))


def prepare_out(out: Path, config: RunConfig) -> bool:
    """Create the run folder, refusing an unwritable one before any work is done. A non-empty
    folder is resumed when asked to, or when it holds a run of the same config (the same
    command started again); anything else there is refused. Returns whether to resume."""
    label = f"--resume {out}" if config.resume else f"--out {out}"
    resuming = False
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        manifest_path = out / "manifest.json"
        if not out.is_dir() or not manifest_path.is_file():
            raise UsageError(f"--out {out}: exists and is not an empty folder or a bench run; "
                             "choose a new one")
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"{label}: unreadable manifest.json ({one_line(exc)})") from exc
        if not (config.resume or previous == config_record(config)):
            raise UsageError(f"--out {out}: holds a run with another configuration; choose a "
                             "new folder, or resume it with: bench run --resume " + str(out))
        resuming = True
    try:  # a resumed folder too: its results are rewritten as each cell ends
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{label}: cannot write there ({exc.strerror}); "
                         "choose a writable folder") from exc
    return resuming


Previous = dict[str, tuple[dict[str, Any], CellOutcome]]
RESULT_COLUMNS = ("cell_key", "status", "attack")  # what resuming reads of results.parquet
SAMPLE_COLUMNS = ("cell_key", "sample", "clean_correct", "adv_pred", "label", "queries")


def check_columns(path: Path, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    """A readable file of a resumed run that lacks the columns bench wrote is not this run's
    (replaced by another parquet file): refused in one line naming it, never a KeyError."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UsageError(f"--resume {path.parent}: {path} is not a bench file of this run "
                         f"(no column {', '.join(missing)}); put back the run's own file, or "
                         "delete it to run those cells again")


def load_previous(out: Path) -> Previous:
    """Finished cells of an interrupted run, by cell key: their rows and per-sample outcomes.
    Cells that raised are not reused (they run again); worst-case rows are recomputed. A row
    that its per-sample outcome contradicts (a hand edit of either file) is refused."""
    results, samples = out / "results.parquet", out / "samples.parquet"
    if not results.is_file() or not samples.is_file():
        return {}
    try:
        rows, per_sample = pd.read_parquet(results), pd.read_parquet(samples)
    except Exception:  # a file cut by a crash is never trusted: those cells run again
        return {}
    try:  # a hand-edited number is refused, not carried into the finished run
        validate_results(rows, results)
    except UsageError as exc:
        raise UsageError(f"--resume {out}: {exc}") from None
    check_columns(results, rows, RESULT_COLUMNS)
    check_columns(samples, per_sample, SAMPLE_COLUMNS)
    previous: Previous = {}
    for key, part in per_sample.groupby("cell_key", sort=False):
        match = rows[(rows["cell_key"] == key) & (rows["status"] != "error")]
        if len(match) != 1:
            continue
        part = part.sort_values("sample")
        outcome = CellOutcome(
            torch.tensor(part["clean_correct"].to_numpy()),
            torch.tensor(part["adv_pred"].to_numpy()), torch.tensor(part["label"].to_numpy()),
            torch.tensor(part["queries"].to_numpy()))
        if "needed_norm" in part and bool(part["needed_norm"].notna().any()):
            outcome.needed_norm = torch.tensor(part["needed_norm"].to_numpy(), dtype=torch.float)
        row = match.iloc[0].to_dict()
        problem = outcome_problem(row, outcome)
        if problem is not None:  # one of the two files was edited: neither can be trusted
            raise UsageError(f"--resume {out}: the {row['attack']} row of {results} "
                             f"disagrees with {samples} ({problem}); put back the run's own "
                             "files, or delete both to run every cell again")
        previous[key] = (row, outcome)  # worst cases too: not resumed, but compared with
    return previous


def earlier_figures(out: Path) -> list[str]:
    """The figures already in the folder of a resumed run (an interrupted run lists none in its
    manifest): its reused cells draw none again."""
    return [f"figures/{path.name}" for path in sorted((out / "figures").glob("*.png"))]


def default_out() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def versions(registry: Registry) -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "advbench": dist_version("advbench")}
    for kind_entries in registry.entries.values():
        for entry in kind_entries.values():
            found[entry.source.distribution] = entry.source.version
    return found


def manifest(plan: Plan, registry: Registry, started: str) -> dict[str, Any]:
    config = config_record(plan.config)
    return {
        "schema_version": SCHEMA_VERSION, "started": started,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],  # no install path
        "config": config, "seed": plan.config.seed, "device": str(plan.device),
        "dataset": plan.dataset.name, "model": plan.model_plugin.name,
        "training": {name: dataclasses.asdict(settings)
                     for name, settings in plan.settings.items()}, "eps": plan.eps,
        "samples": {split: {"n": len(data), "sha256": plan.sample_hashes[split],
                            "data": data_fingerprint(data)}
                    for split, data in plan.evaluation.items()},
        "data": {k: v.files for k, v in {"train": plan.train, **plan.evaluation}.items()},
        "versions": versions(registry),
        "plugin_failures": [f"{f.source}: {f.error}" for f in registry.failures],
        "cells": len(plan.cells),
    }
