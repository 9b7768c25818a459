"""The driver of a run: plan it, hand its tasks to an executor, record and write the results.

``run_matrix`` is the Python API behind ``bench run``. It validates everything before writing
anything (``advbench.running.plan``); an executor (``advbench.running.executors``: in-process by
default, or a pool of processes, or Ray) trains each defended model once and runs its cells
(``advbench.running.worker``); the driver alone records each result as it arrives and rewrites the
results files, so an interrupted run can be resumed whatever ran it. The run folder itself
(creating, resuming, the manifest) is ``advbench.running.run_folder``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from torch import nn

from advbench.algorithms.adversarial_training import plot_training_curves
from advbench.algorithms.smoothing import plot_certified_accuracy
from advbench.defense import Defense
from advbench.plugin_system.loader import load_registry, one_line
from advbench.plugin_system.registry import Entry, Registry
from advbench.reporting.figures import eps_sweep_figures
from advbench.reporting.leaderboard import to_markdown
from advbench.reporting.pictures import (
    adversarial_examples_grid,
    cell_stem,
    eps_grid_figure,
    label_name,
    sweep_series,
)
from advbench.reporting.results import (
    RADIUS_GRID,
    radius_columns,
    to_frame,
    write_atomic,
    write_json,
    write_results,
)
from advbench.reporting.sanity import (
    cell_flags,
    defense_flags,
    eps_zero_differs,
    zero_gradient_fraction,
)
from advbench.reporting.site import write_site
from advbench.running.cell_cache import CachedCell, CellCache
from advbench.running.evaluate import CellOutcome, prediction_draws, skip_mask
from advbench.running.executors import Executor, LocalExecutor, Outcome, get_executor
from advbench.running.model_cache import cache_roots
from advbench.running.plan import (
    WORST_CASE,
    Cell,
    Plan,
    RunConfig,
    build_plan,
    chains,
    check_user_model,
)
from advbench.running.progress import RunProgress, Stopwatch
from advbench.running.run_folder import (
    Previous,
    earlier_figures,
    load_previous,
    manifest,
    prepare_out,
)
from advbench.running.user_model import registry_with_user_model
from advbench.running.worker import (
    CellResult,
    Defended,
    DefenseFailed,
    Worker,
    is_bound_certificate,
    reseed,
)


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


class Runner:
    """Submits a plan's tasks to an executor and records what comes back, writing as it goes."""

    def __init__(self, plan: Plan, registry: Registry, user_model: nn.Module | None,
                 progress: RunProgress, out: Path | None, previous: Previous | None = None,
                 executor: Executor | None = None, stopwatch: Stopwatch | None = None) -> None:
        self.plan, self.registry = plan, registry
        self.stopwatch = stopwatch or Stopwatch()
        self.progress, self.out, self.previous = progress, out, previous or {}
        self.resumed_cells = 0
        self.cell_cache = CellCache(cache_roots(plan.config.cache_dir)[1], progress.log)
        self.reused_keys: list[str] = []  # cells read from the cell cache
        self.groups: dict[str, Group] = {}
        self.worker = Worker(plan, user_model, progress)
        self.executor = executor or LocalExecutor()
        self.rows: list[dict[str, Any]] = []
        self.samples: list[pd.DataFrame] = []
        self.histories: dict[str, dict[str, Any]] = {}
        self.attack_pictures: list[Path] = []
        self.pictures_of: dict[str, list[Path]] = {}  # cell stem → its pictures, for the cache
        self.smoothing_curves: dict[str, list[float]] = {}
        self.owners: dict[Any, tuple[Group, Cell, Chain | None]] = {}

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

    def record(self, group: Group, cell: Cell, row: dict[str, Any],
               outcome: CellOutcome | None) -> None:
        """Keep the row of a planned cell and advance the overall bar."""
        row["cascade"] = self.cascade_text(cell)
        group.rows.append(row)
        self.keep(row, outcome)
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

    def keys(self, cell: Cell, defense: Defense) -> tuple[str, str] | None:
        """The cell's key in the run folder and in the cell cache (None: the attack fails to
        build, and the cell runs to record why)."""
        try:
            attack_config = json.dumps(self.plan.build(cell.attack).config(), sort_keys=True)
        except Exception:
            return None
        defense_config = json.dumps(defense.config(), sort_keys=True)
        return (self.worker.cell_key(cell, attack_config, defense_config),
                self.worker.cache_key(cell, defense, attack_config, defense_config))

    def reused(self, cell: Cell, defense: Defense) -> tuple[dict, CellOutcome] | None:
        """The finished result of ``cell`` from the interrupted run being resumed, or from the
        cell cache (unless ``fresh``), if any."""
        if not self.previous and self.plan.config.fresh:
            return None
        keys = self.keys(cell, defense)
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
        self.take(cell, cached)
        return cached.row, cached.outcome

    def take(self, cell: Cell, cached: CachedCell) -> None:
        """What a cached cell brings of its defended model, which then need not be loaded."""
        group = self.groups[cell.defense.name]
        if cached.certified is not None:
            group.certified[(cell.split, cell.threat.eps)] = cached.certified
        if cached.extras.get("history") is not None:
            self.histories.setdefault(cell.defense.name, cached.extras["history"])
        if cached.extras.get("curve") is not None:
            self.smoothing_curves.setdefault(f"{cell.defense.name}_{cell.split}",
                                             cached.extras["curve"])
        pictures = {name: base64.b64decode(png)
                    for name, png in (cached.extras.get("pictures") or {}).items()}
        self.write_pictures(pictures, self.attack_pictures)

    def store(self, group: Group) -> None:
        """Put the defense's computed cells (not those that raised) in the cell cache, after
        its flags: their rows then carry what the sanity battery needs to run without the
        model. A cache that cannot be written costs no result."""
        state = group.state
        if state is None or group.defense is None:
            return
        for cell, row, outcome in group.computed:
            keys = self.keys(cell, group.defense)
            if keys is None:
                continue
            certified = state.certified.get((cell.split, cell.threat.eps))
            stem = cell_stem(cell.attack_name, cell.defense.name, cell.split, cell.threat.norm,
                             cell.threat.eps)
            pictures = {path.name: base64.b64encode(path.read_bytes()).decode()
                        for path in self.pictures_of.get(stem, []) if path.is_file()}
            extras = {"history": state.history, "curve": state.curves.get(cell.split),
                      "pictures": pictures}
            try:
                self.cell_cache.store(keys[1], CachedCell(
                    row, outcome if row["valid"] else None,
                    certified if row["certifier"] else None, extras))
            except OSError as exc:
                self.progress.log(f"[yellow]cell cache not written: {one_line(exc)}[/yellow]")
                return

    def submit(self, entry: Entry) -> Group:
        """Record what needs no work (resumed cells, or every cell of a defense that cannot be
        built) and hand the rest to the executor: the defended model, then its cells."""
        failure, defense = None, None
        try:
            defense = self.plan.build(entry)
        except Exception as exc:
            self.log_error(f"defense {entry.name}", "".join(traceback.format_exception(exc)))
            failure = f"defense failed: {one_line(exc)}"
        group = self.groups[entry.name] = Group(entry, defense, failure)
        planned = [c for c in self.plan.cells if c.defense is entry]
        if defense is not None and self.plan.config.cascade:
            for chain in chains(planned):
                self.advance(group, Chain(chain))
            planned = []
        for cell in planned:
            done = self.reused(cell, defense) if defense is not None else None
            if done is not None:
                self.record(group, cell, *done)
            elif failure is not None:
                self.record(group, cell, self.worker.row(cell, None, None, None, 0.0, failure),
                            None)
            else:
                if group.prepared is None:
                    group.prepared = self.executor.prepare(defense)
                self.owners[self.executor.attack(group.prepared, cell, defense)] = (
                    group, cell, None)
                group.waiting += 1
        if group.waiting == 0:
            self.finish(group)
        return group

    def advance(self, group: Group, chain: Chain) -> None:
        """Run a cascade chain on: record its next cells that are already done (resumed or
        cached) and submit the first that is not, on the samples no earlier cell fooled."""
        assert group.defense is not None
        while chain.cells:
            cell = chain.next_cell()
            done = self.reused(cell, group.defense)
            if done is None:
                if group.prepared is None:
                    group.prepared = self.executor.prepare(group.defense)
                handle = self.executor.attack(group.prepared, cell, group.defense)
                self.owners[handle] = (group, cell, chain)
                group.waiting += 1
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
            if result.trace:
                self.log_error(f"cell {cell.defense.name} × {cell.attack_name}", result.trace)
            self.stopwatch.add("cells", float(result.row["seconds"]), cell.attack_name)
            self.record(group, cell, result.row, result.outcome)
            if result.row["status"] != "error":
                group.computed.append((cell, result.row, result.outcome))
            if result.outcome is not None and result.row["valid"]:
                with self.stopwatch.phase("pictures"):
                    self.draw(cell, result)
        else:
            failure = (str(result) if isinstance(result, DefenseFailed)
                       else f"worker failed: {one_line(result)}")
            if not isinstance(result, DefenseFailed) or not group.announced:
                self.log_error(f"{group.entry.name}", "".join(
                    traceback.format_exception(result)))
                group.announced = True
            self.record(group, cell, self.worker.row(cell, None, None, None, 0.0, failure),
                        None)
        if chain is not None:
            chain.absorb(group.rows[-1], result.outcome if isinstance(result, CellResult)
                         else None)
            self.advance(group, chain)
        if group.waiting == 0:
            self.finish(group)

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
            if group.state.history is not None:
                self.histories[group.entry.name] = group.state.history
            self.smoothing_curves.update({f"{group.entry.name}_{split}": curve
                                          for split, curve in group.state.curves.items()})
        return group.state

    def draw(self, cell: Cell, result: CellResult) -> None:
        """A valid cell's pictures: clean against adversarial for the samples it kept, drawn
        from the examples the cell made, and the attack's own figures (drawn by the worker).
        A figure never costs a result."""
        outcome = result.outcome
        if result.figures_trace:
            self.log_error(f"figures of {cell.attack_name}", result.figures_trace)
        if self.out is None or outcome is None:
            return
        folder = self.out / "figures"
        stem = cell_stem(cell.attack_name, cell.defense.name, cell.split, cell.threat.norm,
                         cell.threat.eps)
        drawn = self.pictures_of.setdefault(stem, [])
        try:
            self.write_pictures(result.figures, drawn)
            if outcome.shown is not None and outcome.shown_adv is not None and len(outcome.shown):
                data, shown = self.plan.evaluation[cell.split], outcome.shown
                drawn.append(adversarial_examples_grid(
                    data.x[shown], outcome.shown_adv, data.y[shown], data.y[shown],
                    outcome.adv_pred[shown], self.plan.dataset.classes,
                    f"{cell.attack_name} · {cell.threat.norm} ε={cell.threat.eps:.3g} · {stem}",
                    folder / f"{stem}_examples.png"))
        except Exception as exc:
            self.log_error(f"pictures of {cell.attack_name}", "".join(
                traceback.format_exception(exc)))
        self.attack_pictures += drawn

    def write_pictures(self, pictures: dict[str, bytes], written: list[Path]) -> None:
        """PNG files (name → bytes) into the run's ``figures/``: drawn by a worker, or a cached
        cell's, copied rather than drawn again."""
        if self.out is None:
            return
        folder = self.out / "figures"
        folder.mkdir(exist_ok=True)
        for name, png in pictures.items():
            write_atomic(folder / name, lambda path, png=png: path.write_bytes(png))
            written.append(folder / name)

    def draw_sweeps(self, group: Group) -> None:
        """Seed figure 8 per attack, split and norm swept over several ε: the first kept sample
        at each ε, from the cells' own examples."""
        sweeps: dict[tuple[str, str, str], list[tuple[Cell, CellOutcome]]] = {}
        for cell, outcome in group.finished:
            if outcome.shown is not None and outcome.shown_adv is not None and len(outcome.shown):
                key = (cell.attack_name, cell.split, cell.threat.norm)
                sweeps.setdefault(key, []).append((cell, outcome))
        for (attack, split, norm), members in sweeps.items():
            first = {int(outcome.shown[0]) for _, outcome in members}
            if self.out is None or len(members) < 2 or len(first) != 1:
                continue
            sample = first.pop()
            label = int(self.plan.evaluation[split].y[sample])
            series = sweep_series([(cell.threat.eps, outcome.shown_adv[0],
                                    int(outcome.adv_pred[sample])) for cell, outcome in members])
            stem = cell_stem(attack, group.entry.name, split, norm)
            try:
                self.attack_pictures.append(eps_grid_figure(
                    series, label, self.plan.dataset.classes, norm,
                    f"{attack}: one {label_name(label, self.plan.dataset.classes)} at each "
                    f"{norm} ε", self.out / "figures" / f"{stem}_eps.png"))
            except Exception as exc:
                self.log_error(f"pictures of {attack}", "".join(traceback.format_exception(exc)))

    def finish(self, group: Group) -> None:
        """After a defense's last cell: its worst-case rows and the sanity battery's flags."""
        if group.defense is None:
            return
        self.defended(group)
        with self.stopwatch.phase("pictures"):
            self.draw_sweeps(group)
        with self.stopwatch.phase("worst case and sanity"):
            self.record_worst_cases(group)
            self.flag(group.rows, group.state, group.finished)
        if self.out is not None:
            with self.stopwatch.phase("writing"):
                write_results(self.out, self.rows)
        with self.stopwatch.phase("cell cache"):
            self.store(group)

    def flag(self, rows: list[dict[str, Any]], state: Defended | None,
             finished: Sequence[tuple[Cell, CellOutcome]] = ()) -> None:
        """Run the sanity battery over one defense's rows and write its flags into them (with
        each finished cell's per-sample outcome, so black-box attacks are compared with the
        per-sample worst case of the white-box ones)."""
        if state is not None:
            data = next(iter(self.plan.evaluation.values()))
            reseed(state.model, self.plan.config.seed)  # the same noise under any executor
            zero = zero_gradient_fraction(state.model, data, self.plan.device)
            eot, bpda = state.eot_samples, state.bpda
            draws = prediction_draws(state.model, eot)
        else:  # every cell was resumed: the battery's inputs were recorded with them
            zero = float(rows[0].get("zero_grad_fraction", 0.0)) if rows else 0.0
            eot = int(rows[0].get("eot_samples", 1)) if rows else 1
            recorded = rows[0].get("prediction_draws") if rows else None
            draws = 1 if recorded is None or pd.isna(recorded) else int(recorded)
            bpda = any("bpda" in str(row.get("adaptive") or "") for row in rows)
        attacks = {entry.name: entry for entry in self.plan.attacks}
        checked = [row for row in rows if row["valid"] and row["attack"] in attacks]
        robust = {(cell.attack_name, cell.threat.norm, cell.threat.eps, cell.split):
                  outcome.robust.tolist() for cell, outcome in finished}
        cells = pd.DataFrame([{**row, "access": attacks[row["attack"]].cls.access,
                               "single_step": bool(attacks[row["attack"]].cls.single_step),
                               "robust_samples": robust.get((row["attack"], row["norm"],
                                                             row["eps"], row["split"]))}
                              for row in checked])
        found = cell_flags(cells) if checked else {}
        per_row = {id(row): found.get(i, []) for i, row in enumerate(checked)}
        worst = [row for row in rows if row["valid"] and row["attack"] == WORST_CASE]
        if worst:  # the ε = 0 invariant holds for the per-sample union too
            for i, message in eps_zero_differs(pd.DataFrame(worst)):
                per_row[id(worst[i])] = [message]
        common = defense_flags(zero, eot, bpda)
        for row in rows:
            row["zero_grad_fraction"], row["eot_samples"] = zero, eot
            row["prediction_draws"] = draws
            row["flags"] = "; ".join(common + per_row.get(id(row), []))

    def record_worst_cases(self, group: Group) -> None:
        """Per split, norm and ε with two attacks or more: a sample is robust only if every
        valid attack failed on it. ``broken_by`` counts the samples each attack broke."""
        defense, state = group.defense, group.state
        groups: dict[tuple[str, str, float], list[tuple[Cell, CellOutcome]]] = {}
        for cell, outcome in sorted(group.finished, key=lambda item: self.plan.cells.index(
                item[0])):
            key = (cell.split, cell.threat.norm, cell.threat.eps)
            groups.setdefault(key, []).append((cell, outcome))
        for (split, _, _), members in groups.items():
            if len(members) < 2:
                continue
            first_cell, first = members[0]
            broken_by_any = torch.stack([~o.robust for _, o in members]).any(dim=0)
            # The worst case's "prediction" is wrong wherever some attack fooled the model.
            worst_pred = torch.where(broken_by_any, -1, first.labels)
            combined = CellOutcome(first.clean_correct, worst_pred, first.labels,
                                   torch.stack([o.queries for _, o in members]).sum(dim=0))
            broken = {cell.attack_name: int(o.fooled_here.sum()) for cell, o in members}
            cell = Cell(first_cell.defense, None, first_cell.threat, split)
            row = self.worker.row(cell, None, defense, combined, 0.0, None)
            row["broken_by"] = json.dumps(broken, sort_keys=True)
            row["cascade"] = self.cascade_text(cell)
            if state is not None:
                self.worker.add_certification(row, cell, combined, state)
                row["abstain_rate"] = float((state.clean_pred[split] == -1).float().mean())
                row["adaptive"] = state.adaptive
            else:
                self.reused_worst_case(group, row, combined)
            group.rows.append(row)
            self.keep(row, combined)

    def reused_worst_case(self, group: Group, row: dict[str, Any], combined: CellOutcome
                          ) -> None:
        """A worst-case row of a defense whose cells were all reused, without its model: what
        the model gave it is the same in its cells' rows (certificates at its ε, abstentions),
        and broken certificates are counted on the certified samples cached with them."""
        where = (row["split"], row["norm"], row["eps"])
        member = next(r for r in group.rows if r["attack"] != WORST_CASE
                      and (r["split"], r["norm"], r["eps"]) == where)
        shared = ["certified_accuracy", "certified_accuracy_ci_low", "certified_accuracy_ci_high",
                  "certifier", "abstain_rate",
                  *(column for radius in RADIUS_GRID for column in radius_columns(radius))]
        row.update({column: member[column] for column in shared if column in member})
        row["adaptive"] = next((r["adaptive"] for r in group.rows if r.get("adaptive")), "")
        certified = group.certified.get((row["split"], row["eps"]))
        if certified is not None and is_bound_certificate(row["certifier"]):
            row["certified_broken"] = int((certified & ~combined.robust).sum())
        elif row["cell_key"] in self.previous:  # resumed: counted before, on the same samples
            before, outcome = self.previous[row["cell_key"]]
            if torch.equal(outcome.robust, combined.robust):
                row["certified_broken"] = before["certified_broken"]

    def log_error(self, what: str, trace: str) -> None:
        self.progress.log(f"[red]{what} failed: {trace.strip().splitlines()[-1]}[/red]")
        if self.out is not None:
            with open(self.out / "errors.log", "a", encoding="utf-8") as handle:
                handle.write(f"== {what}\n{trace}\n")

    def figures(self, folder: Path) -> list[Path]:
        """Training curves of the defenses that kept a history, and smoothing's certified
        accuracy against the radius."""
        written = [plot_training_curves(history, folder / f"training_{name}.png")
                   for name, history in sorted(self.histories.items())]
        written += [plot_certified_accuracy(RADIUS_GRID, curve, folder / f"certified_{name}.png")
                    for name, curve in sorted(self.smoothing_curves.items())]
        return written + self.attack_pictures

    def run(self) -> pd.DataFrame:
        self.progress.overall(len(self.plan.cells))
        self.executor.start(self.worker)
        try:
            for entry in self.plan.defenses:
                self.submit(entry)
            for handle, result in self.executor.completed():
                self.receive(*self.owners.pop(handle), result)
        finally:
            self.executor.close()
        self.rows.sort(key=self.plan_position)  # cells may come back in any order
        if self.out is not None:
            write_results(self.out, self.rows)
        return to_frame(self.rows)

    def plan_position(self, row: dict[str, Any]) -> tuple[int, int, int]:
        """Where a row stands in the plan: its defense, then its cell (worst cases last)."""
        defenses = [entry.name for entry in self.plan.defenses]
        for index, cell in enumerate(self.plan.cells):
            if (cell.defense.name, cell.attack_name, cell.threat.norm, cell.threat.eps,
                    cell.split) == (row["defense"], row["attack"], row["norm"], row["eps"],
                                    row["split"]):
                return defenses.index(row["defense"]), 0, index
        return defenses.index(row["defense"]), 1, 0


def run_matrix(
    config: RunConfig | None = None,
    *,
    model: nn.Module | str | None = None,
    registry: Registry | None = None,
    progress: bool = False,
    console: Console | None = None,
    executor: Executor | str = "local",
    **overrides: Any,
) -> pd.DataFrame:
    """Run the attack × defense matrix and return one row per cell as a DataFrame.

    ``model``: your own trained ``nn.Module`` (logits out, inputs in [0, 1]) for ``dataset``;
    the defense ``none`` evaluates it as it is, training-time defenses fine-tune a copy.
    ``model`` may also be a model plugin name or ``package.module:factory`` string.
    ``executor``: ``"local"`` (this process), ``"processes"``, ``"ray"``, or an
    :class:`~advbench.executors.Executor`; the results are the same whichever runs the cells.
    Keyword ``overrides`` set fields of :class:`RunConfig`, e.g. ``attacks="fgsm"``.
    Files are written only when ``out`` is given.
    """
    if isinstance(model, str):
        overrides["model"], model = model, None
    config = dataclasses.replace(config or RunConfig(), **overrides)
    if model is not None and config.model == RunConfig.model:
        config = dataclasses.replace(config, model=type(model).__name__)
    registry = registry or load_registry(strict=config.strict_plugins)
    if model is not None:
        registry = registry_with_user_model(registry, config.model)
    stopwatch, begun = Stopwatch(), time.perf_counter()
    with stopwatch.phase("data"):  # resolving the plan loads and checks the data
        plan = build_plan(config, registry)
        config = plan.config  # with the preset's decisions (cascade)
        if model is not None:
            check_user_model(model, plan.dataset)
    if isinstance(executor, str):
        executor = get_executor(executor)
    out = Path(config.out) if config.out is not None else None
    resuming = out is not None and prepare_out(out, config)
    previous = load_previous(out) if resuming and not config.fresh else {}
    earlier = earlier_figures(out) if resuming else []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_manifest = manifest(plan, registry, started)
    run_manifest["executor"] = executor.name
    run_manifest["figures"] = earlier
    if out is not None:
        write_json(out / "manifest.json", run_manifest)
    wall = time.perf_counter()
    with RunProgress(progress, console) as bars:
        runner = Runner(plan, registry, model, bars, out, previous, executor, stopwatch)
        frame = runner.run()
    run_manifest["wall_seconds"] = round(time.perf_counter() - wall, 1)
    run_manifest["resumed_cells"] = runner.resumed_cells
    run_manifest["reused_cells"] = len(runner.reused_keys)  # from the cell cache
    run_manifest["reused_cell_keys"] = runner.reused_keys
    if out is not None:
        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        with stopwatch.phase("figures"):
            try:
                written = eps_sweep_figures(frame, figures) + runner.figures(figures)
            except Exception as exc:  # a figure never costs the results files written next
                runner.log_error("figures", "".join(traceback.format_exception(exc)))
                written = list(runner.attack_pictures)
        run_manifest["figures"] = list(dict.fromkeys(
            earlier + [str(p.relative_to(out)) for p in written]))
        with stopwatch.phase("writing"):
            run_manifest["phases"] = stopwatch.record()
            write_json(out / "manifest.json", run_manifest)
            text = to_markdown(frame, run_manifest)
            write_atomic(out / "leaderboard.md", lambda p: p.write_text(text, encoding="utf-8"))
            write_site(frame, out, run_manifest)  # index.html, the same tables as a web page
    run_manifest["phases"] = stopwatch.record()
    # wall_seconds: the matrix (as leaderboard.md shows it); total_seconds: data to last file
    run_manifest["total_seconds"] = round(time.perf_counter() - begun, 1)
    if out is not None:
        write_json(out / "manifest.json", run_manifest)
    frame.attrs["manifest"] = run_manifest
    return frame


def evaluate_model(model: nn.Module, dataset: str = "fashion-mnist", **overrides: Any
                   ) -> pd.DataFrame:
    """Evaluate your own trained model against every attack (no defense): the commonest ask."""
    overrides.setdefault("defenses", "none")
    return run_matrix(model=model, dataset=dataset, **overrides)
