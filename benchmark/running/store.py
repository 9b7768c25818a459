"""The run's result store: rows kept and written as cells finish, reused cells, errors.log.

A finished cell is reused, rather than run, from the interrupted run being resumed (its run
folder, by cell key) or from the cell cache (``advbench.running.cell_cache``, by cache key,
after checking the entry names this very cell); a defense's computed cells go into the cell
cache once its flags are in their rows. ``results.csv``, ``results.parquet`` and
``samples.parquet`` are rewritten whole after each row, so an interrupted run can be resumed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from advbench._util import one_line, write_atomic
from advbench.defense import Defense
from advbench.plugin_system.registry import Entry
from advbench.reporting.pictures import cell_stem
from advbench.reporting.results import write_results
from advbench.running.cell_cache import CachedCell, CellCache
from advbench.running.evaluate import CellOutcome
from advbench.running.keys import Keys
from advbench.running.model_cache import cache_roots
from advbench.running.plan import Cell, Plan
from advbench.running.prepare import Defended
from advbench.running.progress import RunProgress, Stopwatch
from advbench.running.run_figures import RunFigures
from advbench.running.run_folder import Previous


@dataclass
class Group:
    """One defense's share of the run, while its cells come back."""

    entry: Entry
    defense: Defense | None
    failure: str | None
    prepared: Any = None
    waiting: int = 0  # cells submitted, not yet back
    rows: list[dict[str, Any]] = field(default_factory=list)
    finished: list[tuple[Cell, CellOutcome]] = field(default_factory=list)
    state: Defended | None = None
    announced: bool = False
    computed: list[tuple[Cell, dict[str, Any], CellOutcome | None]] = field(default_factory=list)
    certified: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)  # cached


class ResultStore:
    """Keeps the run's rows and per-sample outcomes and writes them (when ``out`` is given),
    finds finished cells to reuse, fills the cell cache, and logs errors."""

    def __init__(self, plan: Plan, keys: Keys, progress: RunProgress, out: Path | None,
                 previous: Previous | None = None, stopwatch: Stopwatch | None = None) -> None:
        self.plan, self.keys, self.progress, self.out = plan, keys, progress, out
        self.previous = previous or {}
        self.stopwatch = stopwatch or Stopwatch()
        self.resumed_cells = 0
        self.cell_cache = CellCache(cache_roots(plan.config.cache_dir)[1], progress.log)
        self.reused_keys: list[str] = []  # cells read from the cell cache
        self.rows: list[dict[str, Any]] = []
        self.samples: list[pd.DataFrame] = []
        self.figures = RunFigures(plan, out, self.log_error)

    def keep(self, row: dict[str, Any], outcome: CellOutcome | None) -> None:
        """Append a row (and its per-sample outcome) and rewrite the results files."""
        self.rows.append(row)
        if outcome is not None and row["valid"]:
            self.samples.append(pd.DataFrame({
                "cell_key": row["cell_key"], "sample": range(len(outcome.labels)),
                "clean_correct": outcome.clean_correct.numpy(),
                "adv_pred": outcome.adv_pred.numpy(), "label": outcome.labels.numpy(),
                "queries": outcome.queries.numpy(), "robust": outcome.robust.numpy(),
                # the size a minimum-norm attack needed (NaN: not attacked, or none reported)
                "needed_norm": (float("nan") if outcome.needed_norm is None
                                else outcome.needed_norm.numpy())}))
        if self.out is None:
            return
        with self.stopwatch.phase("writing"):
            self.write_rows()

    def write_rows(self) -> None:
        """Rewrite the run folder's results and per-sample files (atomically)."""
        assert self.out is not None
        samples = pd.concat(self.samples, ignore_index=True) if self.samples else None
        if samples is not None:  # samples first: a row on disk always has its samples
            write_atomic(self.out / "samples.parquet",
                         lambda p: samples.to_parquet(p, index=False))
        write_results(self.out, self.rows)

    def write_results(self) -> None:
        """Rewrite the results files (not the per-sample file), when the run has a folder."""
        if self.out is not None:
            write_results(self.out, self.rows)

    def cell_keys(self, cell: Cell, defense: Defense) -> tuple[str, str] | None:
        """The cell's key in the run folder and in the cell cache (None: the attack fails to
        build, and the cell runs to record why)."""
        assert cell.attack is not None
        try:
            attack_config = json.dumps(self.plan.build(cell.attack).config(), sort_keys=True)
        except Exception:
            return None
        defense_config = json.dumps(defense.config(), sort_keys=True)
        return (self.keys.cell_key(cell, attack_config, defense_config),
                self.keys.cache_key(cell, defense, attack_config, defense_config))

    def reused(self, cell: Cell, group: Group
               ) -> tuple[dict[str, Any], CellOutcome | None] | None:
        """The finished result of ``cell`` from the interrupted run being resumed, or from the
        cell cache (unless ``fresh``), if any; a cached cell brings its share of the defended
        model (certified samples, curves, pictures), which then need not be loaded."""
        assert group.defense is not None
        if not self.previous and self.plan.config.fresh:
            return None
        keys = self.cell_keys(cell, group.defense)
        if keys is None:
            return None
        if keys[0] in self.previous:
            self.resumed_cells += 1
            return self.previous[keys[0]]
        labels = self.plan.evaluation[cell.split].y
        plan = self.plan
        expect = {"dataset": plan.dataset.name, "model": plan.model_plugin.name,
                  "defense": cell.defense.name, "attack": cell.attack_name,
                  "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
                  "seed": plan.config.seed, "cell_key": keys[0]}
        cached = None if plan.config.fresh else self.cell_cache.load(keys[1], labels, expect)
        if cached is None:
            return None
        self.reused_keys.append(keys[1])
        if cached.certified is not None:
            group.certified[(cell.split, cell.threat.eps)] = cached.certified
        self.figures.take(cell, cached)
        return cached.row, cached.outcome

    def cache(self, group: Group) -> None:
        """Put the defense's computed cells (not those that raised) in the cell cache, after
        its flags: their rows then carry what the sanity battery needs to run without the
        model. A cache that cannot be written costs no result."""
        state = group.state
        if state is None or group.defense is None:
            return
        for cell, row, outcome in group.computed:
            keys = self.cell_keys(cell, group.defense)
            if keys is None:
                continue
            certified = state.certified.get((cell.split, cell.threat.eps))
            stem = cell_stem(cell.attack_name, cell.defense.name, cell.split, cell.threat.norm,
                             cell.threat.eps)
            pictures = {path.name: base64.b64encode(path.read_bytes()).decode()
                        for path in self.figures.pictures_of.get(stem, []) if path.is_file()}
            extras = {"history": state.history, "curve": state.curves.get(cell.split),
                      "pictures": pictures}
            try:
                self.cell_cache.store(keys[1], CachedCell(
                    row, outcome if row["valid"] else None,
                    certified if row["certifier"] else None, extras))
            except OSError as exc:
                self.progress.log(f"[yellow]cell cache not written: {one_line(exc)}[/yellow]")
                return

    def log_error(self, what: str, trace: str) -> None:
        """Say in one line that ``what`` failed, and keep its traceback in ``errors.log``."""
        self.progress.log(f"[red]{what} failed: {trace.strip().splitlines()[-1]}[/red]")
        if self.out is not None:
            with open(self.out / "errors.log", "a", encoding="utf-8") as handle:
                handle.write(f"== {what}\n{trace}\n")
