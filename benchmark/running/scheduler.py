"""The scheduler of a run: hand a plan's work to an executor and receive what comes back.

Per defense, the defended model is prepared once and its cells are submitted; in a cascade,
each chain of cells (one split and threat model) runs one cell at a time, each on the samples
no earlier cell fooled. Every row goes to the :class:`ResultStore` as it arrives; after a
defense's last cell the :class:`Aggregator` adds its worst cases and flags.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from advbench._util import one_line
from advbench.plugin_system.registry import Entry
from advbench.reporting.aggregate import Aggregator
from advbench.reporting.results import cell_row, to_frame
from advbench.running.cells import CellResult
from advbench.running.evaluate import CellOutcome, skip_mask
from advbench.running.executors import Executor, Outcome
from advbench.running.plan import Cell, Plan, chains
from advbench.running.prepare import Defended, DefenseFailed
from advbench.running.progress import Stopwatch
from advbench.running.store import Group, ResultStore
from advbench.running.worker import Worker


@dataclass
class Chain:
    """A cascade's cells of one defense, split and threat model not yet run, and the samples
    its finished cells fooled: the next cell skips them."""

    cells: list[Cell]
    fooled: torch.Tensor | None = None

    def next_cell(self) -> Cell:
        """The next cell, skipping what the chain fooled so far."""
        cell = self.cells.pop(0)
        if self.fooled is None:
            return cell
        return dataclasses.replace(cell, skip=tuple(torch.nonzero(self.fooled).flatten().tolist()))

    def absorb(self, row: dict[str, Any], outcome: CellOutcome | None) -> None:
        """A finished cell's fooled samples (its own and those it skipped); an invalid or
        failed cell fools none."""
        if outcome is not None and row["valid"]:
            self.fooled = outcome.clean_correct & ~outcome.adv_correct


class Scheduler:
    """Submits a plan's tasks to an executor and hands what comes back to the store."""

    def __init__(self, plan: Plan, worker: Worker, executor: Executor, store: ResultStore,
                 stopwatch: Stopwatch) -> None:
        self.plan, self.worker, self.executor = plan, worker, executor
        self.store, self.stopwatch, self.progress = store, stopwatch, store.progress
        self.aggregator = Aggregator(plan, worker.keys, store.previous)
        self.groups: dict[str, Group] = {}
        self.owners: dict[Any, tuple[Group, Cell, Chain | None]] = {}

    def run(self) -> pd.DataFrame:
        """Every defense's cells, submitted and received; the rows in plan order."""
        self.progress.overall(len(self.plan.cells))
        self.executor.start(self.worker)
        try:
            for entry in self.plan.defenses:
                self.submit(entry)
            for handle, result in self.executor.completed():
                self.receive(*self.owners.pop(handle), result)
        finally:
            self.executor.close()
            self.worker.close()
        self.store.rows.sort(key=self.plan_position)  # cells may come back in any order
        self.store.write_results()
        return to_frame(self.store.rows)

    def submit(self, entry: Entry) -> Group:
        """Record what needs no work (resumed cells, or every cell of a defense that cannot be
        built) and hand the rest to the executor: the defended model, then its cells."""
        failure, defense = None, None
        try:
            defense = self.plan.build(entry)
        except Exception as exc:
            self.store.log_error(f"defense {entry.name}", "".join(traceback.format_exception(exc)))
            failure = f"defense failed: {one_line(exc)}"
        group = self.groups[entry.name] = Group(entry, defense, failure)
        planned = [c for c in self.plan.cells if c.defense is entry]
        if defense is not None and self.plan.config.cascade:
            for chain in chains(planned):
                self.advance(group, Chain(chain))
            planned = []
        for cell in planned:
            done = self.store.reused(cell, group) if defense is not None else None
            if done is not None:
                self.record(group, cell, *done)
            elif failure is not None:
                self.record(group, cell, cell_row(self.worker.keys.identity(cell), error=failure),
                            None)
            else:
                self.dispatch(group, cell, None)
        if group.waiting == 0:
            self.finish(group)
        return group

    def dispatch(self, group: Group, cell: Cell, chain: Chain | None) -> None:
        """Hand a cell to the executor, preparing its defended model first if not yet done."""
        assert group.defense is not None
        if group.prepared is None:
            group.prepared = self.executor.prepare(group.defense)
        self.owners[self.executor.attack(group.prepared, cell, group.defense)] = (
            group, cell, chain)
        group.waiting += 1

    def advance(self, group: Group, chain: Chain) -> None:
        """Run a cascade chain on: record its next cells that are already done (resumed or
        cached) and submit the first that is not, on the samples no earlier cell fooled."""
        while chain.cells:
            cell = chain.next_cell()
            done = self.store.reused(cell, group)
            if done is None:
                self.dispatch(group, cell, chain)
                return
            row, outcome = done
            if cell.skip and outcome is not None and outcome.skipped is None:
                outcome.skipped = skip_mask(len(outcome.labels), cell.skip)  # a resumed cell's
            self.record(group, cell, row, outcome)
            chain.absorb(row, outcome)

    def receive(self, group: Group, cell: Cell, chain: Chain | None, result: Outcome) -> None:
        """Record a cell that came back (its pictures too), run its cascade chain on, and close
        its defense after its last cell."""
        group.waiting -= 1
        if isinstance(result, CellResult):
            if result.trace or result.row["status"] == "error":  # a process's death too
                self.store.log_error(f"cell {cell.defense.name} × {cell.attack_name}",
                                     result.trace or f"{result.row['invalid_reason']}\n")
            self.stopwatch.add("cells", float(result.row["seconds"]), cell.attack_name)
            self.record(group, cell, result.row, result.outcome)
            if result.row["status"] != "error":
                group.computed.append((cell, result.row, result.outcome))
            if result.outcome is not None and result.row["valid"]:
                with self.stopwatch.phase("pictures"):
                    self.store.figures.draw(cell, result)
        else:
            failure = (str(result) if isinstance(result, DefenseFailed)
                       else f"worker failed: {one_line(result)}")
            if not isinstance(result, DefenseFailed) or not group.announced:
                self.store.log_error(f"{group.entry.name}", "".join(
                    traceback.format_exception(result)))
                group.announced = True
            self.record(group, cell, cell_row(self.worker.keys.identity(cell), error=failure),
                        None)
        if chain is not None:
            chain.absorb(group.rows[-1], result.outcome if isinstance(result, CellResult)
                         else None)
            self.advance(group, chain)
        if group.waiting == 0:
            self.finish(group)

    def record(self, group: Group, cell: Cell, row: dict[str, Any],
               outcome: CellOutcome | None) -> None:
        """Keep the row of a planned cell and advance the overall bar."""
        row["cascade"] = self.cascade_text(cell)
        group.rows.append(row)
        self.store.keep(row, outcome)
        self.progress.cell_done()
        if outcome is not None and row["valid"]:
            group.finished.append((cell, outcome))

    def cascade_text(self, cell: Cell) -> str:
        """In a cascade, the attacks of the cell's chain up to it (all of them for a worst
        case), cheapest first: its robust accuracy is against all of these; else ""."""
        if not self.plan.config.cascade:
            return ""
        chain = next(c for c in chains([p for p in self.plan.cells if p.defense is cell.defense])
                     if (c[0].split, c[0].threat) == (cell.split, cell.threat))
        names = [c.attack_name for c in chain]
        if cell.attack is not None:
            names = names[: names.index(cell.attack_name) + 1]
        return " > ".join(names)

    def defended(self, group: Group) -> Defended | None:
        """The group's defended model in the driver (None if preparing it failed); its log
        lines, training curves and certified-accuracy curves are collected on first use."""
        if group.state is None and group.prepared is not None and group.defense is not None:
            try:
                group.state = self.executor.state(group.prepared, group.defense)
            except Exception:
                group.prepared = None
                return None
            for phase, seconds in group.state.seconds.items():
                self.stopwatch.add(phase, seconds,
                                   group.entry.name if phase == "training" else None)
            for line in group.state.log:
                self.progress.log(line)
            self.store.figures.defended(group.entry.name, group.state)
        return group.state

    def finish(self, group: Group) -> None:
        """After a defense's last cell: its worst-case rows and the sanity battery's flags."""
        if group.defense is None:
            return
        self.defended(group)
        with self.stopwatch.phase("pictures"):
            self.store.figures.draw_sweeps(group.entry.name, group.finished)
        with self.stopwatch.phase("worst case and sanity"):
            for row, combined in self.aggregator.worst_cases(group, self.cascade_text):
                group.rows.append(row)
                self.store.keep(row, combined)
            self.aggregator.flag(group.rows, group.state, group.finished)
        if self.store.out is not None:
            with self.stopwatch.phase("writing"):
                self.store.write_results()
        with self.stopwatch.phase("cell cache"):
            self.store.cache(group)

    def plan_position(self, row: dict[str, Any]) -> tuple[int, int, int]:
        """Where a row stands in the plan: its defense, then its cell (worst cases last)."""
        defenses = [entry.name for entry in self.plan.defenses]
        for index, cell in enumerate(self.plan.cells):
            if (cell.defense.name, cell.attack_name, cell.threat.norm, cell.threat.eps,
                    cell.split) == (row["defense"], row["attack"], row["norm"], row["eps"],
                                    row["split"]):
                return defenses.index(row["defense"]), 0, index
        return defenses.index(row["defense"]), 1, 0
