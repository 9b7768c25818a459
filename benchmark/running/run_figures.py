"""The run's pictures, written into ``figures/`` as cells finish, and its figures at the end.

Cell pictures are drawn from the examples each cell kept (never by running an attack again);
an attack's own figures come back from the worker as PNG bytes. A picture never costs a result:
a failure is logged (``errors.log``) and the run goes on.
"""

from __future__ import annotations

import base64
import functools
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor

from advbench._util import write_atomic
from advbench.reporting.figures import plot_certified_accuracy, plot_training_curves
from advbench.reporting.pictures import (
    adversarial_examples_grid,
    cell_stem,
    eps_grid_figure,
    label_name,
    sweep_series,
)
from advbench.reporting.results import RADIUS_GRID
from advbench.running.cell_cache import CachedCell
from advbench.running.cells import CellResult
from advbench.running.evaluate import CellOutcome
from advbench.running.plan import Cell, Plan
from advbench.running.prepare import Defended


class RunFigures:
    """What the run draws: each valid cell's pictures, per-ε sweeps, training curves and
    smoothing's certified accuracy; ``log_error(what, trace)`` records a failed drawing."""

    def __init__(self, plan: Plan, out: Path | None,
                 log_error: Callable[[str, str], None]) -> None:
        self.plan, self.out, self.log_error = plan, out, log_error
        self.histories: dict[str, dict] = {}
        self.smoothing_curves: dict[str, list[float]] = {}
        self.attack_pictures: list[Path] = []
        self.pictures_of: dict[str, list[Path]] = {}  # cell stem → its pictures, for the cache

    def defended(self, name: str, state: Defended) -> None:
        """A defended model's training curves and certified-accuracy curves."""
        if state.history is not None:
            self.histories[name] = state.history
        self.smoothing_curves.update({f"{name}_{split}": curve
                                      for split, curve in state.curves.items()})

    def take(self, cell: Cell, cached: CachedCell) -> None:
        """A cached cell's curves and pictures, copied rather than drawn again."""
        if cached.extras.get("history") is not None:
            self.histories.setdefault(cell.defense.name, cached.extras["history"])
        if cached.extras.get("curve") is not None:
            self.smoothing_curves.setdefault(f"{cell.defense.name}_{cell.split}",
                                             cached.extras["curve"])
        pictures = {name: base64.b64decode(png)
                    for name, png in (cached.extras.get("pictures") or {}).items()}
        self.write_pictures(pictures, self.attack_pictures)

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
            write_atomic(folder / name, functools.partial(Path.write_bytes, data=png))
            written.append(folder / name)

    def draw_sweeps(self, defense: str, finished: Sequence[tuple[Cell, CellOutcome]]) -> None:
        """Per attack, split and norm swept over several ε: the first kept sample at each ε,
        from the cells' own examples."""
        # per attack, split and norm: each ε's cell, its first kept sample and its example
        sweeps: dict[tuple[str, str, str], list[tuple[Cell, CellOutcome, int, Tensor]]] = {}
        for cell, outcome in finished:
            if outcome.shown is not None and outcome.shown_adv is not None and len(outcome.shown):
                key = (cell.attack_name, cell.split, cell.threat.norm)
                sweeps.setdefault(key, []).append(
                    (cell, outcome, int(outcome.shown[0]), outcome.shown_adv[0]))
        for (attack, split, norm), members in sweeps.items():
            first = {shown for _, _, shown, _ in members}
            if self.out is None or len(members) < 2 or len(first) != 1:
                continue
            sample = first.pop()
            label = int(self.plan.evaluation[split].y[sample])
            series = sweep_series([(cell.threat.eps, example, int(outcome.adv_pred[sample]))
                                   for cell, outcome, _, example in members])
            stem = cell_stem(attack, defense, split, norm)
            try:
                self.attack_pictures.append(eps_grid_figure(
                    series, label, self.plan.dataset.classes, norm,
                    f"{attack}: one {label_name(label, self.plan.dataset.classes)} at each "
                    f"{norm} ε", self.out / "figures" / f"{stem}_eps.png"))
            except Exception as exc:
                self.log_error(f"pictures of {attack}", "".join(traceback.format_exception(exc)))

    def written(self, folder: Path) -> list[Path]:
        """Training curves of the defenses that kept a history, and smoothing's certified
        accuracy against the radius, drawn into ``folder``; with the pictures written so far."""
        written = [plot_training_curves(history, folder / f"training_{name}.png")
                   for name, history in sorted(self.histories.items())]
        written += [plot_certified_accuracy(RADIUS_GRID, curve, folder / f"certified_{name}.png")
                    for name, curve in sorted(self.smoothing_curves.items())]
        return written + self.attack_pictures
