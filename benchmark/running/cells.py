"""Cell running: attack a prepared defended model on one cell's samples, grade it, draw its figures.

A :class:`CellRunner` returns a :class:`CellResult` and keeps nothing: the driver alone records
it. Everything a cell is graded with comes from the defended model's seal
(``advbench.running.prepare``), whatever plugins rebound since.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench._util import one_line
from advbench.attack import Attack
from advbench.data import Split
from advbench.defense import Defense
from advbench.oracle import Oracle
from advbench.reporting.pictures import cell_stem
from advbench.reporting.results import cell_row
from advbench.running.evaluate import (
    CellOutcome,
    CellSpec,
    attack_cell,
    either_fooled,
    prediction_draws,
)
from advbench.running.isolation import AttackProcess, IsolatedFailure, IsolatedRunner, isolated
from advbench.running.keys import Keys
from advbench.running.model_cache import content_key
from advbench.running.plan import Cell, Plan
from advbench.running.prepare import Defended, Preparer, add_certification, reseed
from advbench.running.progress import RunProgress
from advbench.running.served import ServeFailed
from advbench.seal import Seal, SealBroken


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a plain RuntimeError)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def targeted_success(outcome: CellOutcome, targets: torch.Tensor) -> float:
    """Among attacked samples (correct, target not their label): fraction sent to the target."""
    attacked = outcome.clean_correct & (targets != outcome.labels)
    hits = (outcome.adv_pred == targets) & attacked
    return float(hits.sum()) / max(1, int(attacked.sum()))


def cell_seed(cell: Cell) -> int:
    """A seed of the cell alone, so its numbers do not depend on which cells ran before it."""
    return int(content_key([cell.defense.name, cell.attack_name, cell.threat.norm,
                            cell.threat.eps, cell.split])[:8], 16)


@dataclass
class CellResult:
    """What a cell sends back: its row, its per-sample outcome, and the traceback if it raised."""

    row: dict[str, Any]
    outcome: CellOutcome | None
    trace: str | None = None
    # The attack's own figures (file name -> PNG bytes) and the traceback if drawing them
    # failed: drawn here, under the seal, so that the driver never runs an attack.
    figures: dict[str, bytes] = field(default_factory=dict)
    figures_trace: str | None = None


@dataclass(frozen=True)
class Sealed:
    """What a cell is graded with, read from the seal: its split's images and labels, the
    defended model's clean predictions, and the targets (None: untargeted)."""

    seal: Seal
    data: Split
    clean_pred: torch.Tensor
    targets: torch.Tensor | None

    @classmethod
    def read(cls, seal: Seal, split: str, targeted: bool) -> Sealed:
        return cls(seal, Split(seal.tensor(f"evaluation images ({split})"),
                               seal.tensor(f"evaluation labels ({split})")),
                   seal.tensor(f"clean predictions ({split})"),
                   seal.tensor(f"targets ({split})") if targeted else None)


@dataclass
class Attempt:
    """How the attack went: the attack as built (None if building it failed), its outcome or
    the error, and the batch size it ran with (halved on running out of memory)."""

    attack: Attack | None
    outcome: CellOutcome | None
    batch_size: int
    error: str | None = None
    trace: str | None = None


class CellRunner:
    """Runs the cells of one plan on the defended models a :class:`Preparer` makes."""

    def __init__(self, plan: Plan, models: Preparer, keys: Keys, progress: RunProgress) -> None:
        self.plan, self.models, self.keys, self.progress = plan, models, keys, progress
        self.attack_process = AttackProcess(plan.config.attack_memory)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": None, "attack_process": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.progress = RunProgress(False)
        self.attack_process = AttackProcess(self.plan.config.attack_memory)

    def close(self) -> None:
        """Stop the attack process, if one was started."""
        self.attack_process.close()

    def isolated(self, cell: Cell) -> bool:
        """Whether the cell's attack runs in the attack process (``--isolation``)."""
        assert cell.attack is not None
        return isolated(self.plan.config.isolation, cell.attack.source.distribution)

    def trusted(self, cell: Cell) -> bool:
        """Whether the cell's attack code may run here (its figures are drawn here): bench's
        own attacks, isolated or not, and every attack the user vouched for."""
        assert cell.attack is not None
        return not isolated("auto", cell.attack.source.distribution) or not self.isolated(cell)

    def run_cell(self, cell: Cell, defense: Defense, state: Defended) -> CellResult:
        """Attack the defended model on the cell's samples (halving the batch on running out
        of memory); an attack that raises gives an error row, with its traceback."""
        seal = self.models.seal(self.models.materialize(state, defense))
        sealed = Sealed.read(seal, cell.split, bool(self.plan.config.targeted))
        self.progress.step(f"{cell.defense.name} × {cell.attack_name} {cell.threat.norm} "
                           f"ε={cell.threat.eps:g} ({cell.split})",
                           int((sealed.clean_pred == sealed.data.y).sum()) - len(cell.skip))
        started = time.perf_counter()
        tried = self.attempt(cell, state, sealed)
        attack, outcome = tried.attack, tried.outcome
        row = cell_row(self.keys.identity(cell, attack, defense), outcome=outcome,
                       seconds=time.perf_counter() - started, error=tried.error)
        row["eot_samples"], row["batch_size"] = state.eot_samples, tried.batch_size
        assert state.model is not None
        row["prediction_draws"] = prediction_draws(state.model, state.eot_samples)
        row["adaptive"] = state.adaptive if attack is None or attack.access == "gradient" else ""
        row["grading"] = "isolated" if self.isolated(cell) else "in-process"
        row["abstain_rate"] = float((sealed.clean_pred == -1).float().mean())
        add_certification(row, cell, outcome, state)
        if sealed.targets is not None and outcome is not None and row["valid"]:
            row["targeted_success_rate"] = targeted_success(outcome, sealed.targets)
        result = CellResult(row, outcome if tried.error is None else None, tried.trace)
        if (attack is not None and result.outcome is not None and row["valid"]
                and self.trusted(cell)):  # a third party's isolated attack never runs here
            try:
                result.figures = self.attack_figures(attack, cell, state, sealed,
                                                     result.outcome)
            except Exception as exc:  # a figure never costs a result
                result.figures_trace = "".join(traceback.format_exception(exc))
        return result

    def attempt(self, cell: Cell, state: Defended, sealed: Sealed) -> Attempt:
        """Build and run the cell's attack, halving the batch while it runs out of memory; an
        attack that raises (or breaks the seal beyond repair) is the attempt's error."""
        attack, batch_size = None, self.plan.config.batch_size
        assert cell.attack is not None
        while True:
            try:
                attack = self.plan.build(cell.attack)
                return Attempt(attack, self.runs(cell, attack, state, sealed, batch_size),
                               batch_size)
            except SealBroken as exc:
                return Attempt(attack, None, batch_size,
                               f"the defended model cannot be restored: {exc}")
            except IsolatedFailure as exc:
                if not (exc.out_of_memory and batch_size > 1):
                    return Attempt(attack, None, batch_size, str(exc), exc.trace)
            except ServeFailed as exc:  # the served defense failed, not the attack
                return Attempt(attack, None, batch_size, str(exc),
                               "".join(traceback.format_exception(exc)))
            except SystemExit as exc:
                return Attempt(attack, None, batch_size,
                               f"attack called sys.exit({exc.code!r})",
                               "".join(traceback.format_exception(exc)))
            except Exception as exc:
                if not (is_out_of_memory(exc) and batch_size > 1):
                    return Attempt(attack, None, batch_size, f"attack raised {one_line(exc)}",
                                   "".join(traceback.format_exception(exc)))
            batch_size //= 2
            self.progress.log(f"out of memory: retrying the cell with batches of {batch_size}")

    def runs(self, cell: Cell, attack: Attack, state: Defended, sealed: Sealed,
             batch_size: int) -> CellOutcome:
        """The attack on the cell, and again with BPDA's surrogate gradients for a gradient
        attack where the defense asks for them (the same seeds each time): per sample, the
        run that fooled the model."""
        assert state.model is not None
        surrogates: list[nn.Module | None] = [None]
        if state.bpda and attack.access == "gradient":
            surrogates.append(state.surrogate)
        combined = None
        for surrogate in surrogates:  # the same seeds for each run
            reseed(state.model, cell_seed(cell))
            if surrogate is not None:
                reseed(surrogate, cell_seed(cell))
            torch.manual_seed(cell_seed(cell))
            runner = None
            if self.isolated(cell):
                runner = IsolatedRunner(self.attack_process, self.plan.device, cell_seed(cell),
                                        self.plan.config.cell_timeout or None)
            spec = CellSpec(batch_size=batch_size, device=self.plan.device,
                            seed=self.plan.config.seed, targets=sealed.targets,
                            eot_samples=state.eot_samples, surrogate=surrogate, skip=cell.skip,
                            runner=runner)
            found = attack_cell(state.model, attack, sealed.data, sealed.clean_pred, cell.threat,
                                spec, seal=sealed.seal, on_batch=self.progress.advance)
            combined = found if combined is None else either_fooled(combined, found)
        assert combined is not None
        return combined

    def attack_figures(self, attack: Attack, cell: Cell, state: Defended, sealed: Sealed,
                       outcome: CellOutcome) -> dict[str, bytes]:
        """The attack's own figures, if it draws any (``figures(oracle, x, y, stem) ->
        [paths]``), on the cell's shown samples through an oracle under the seal (its queries
        are not the cell's); returned as PNG bytes for the driver to write."""
        draws = type(attack).figures is not Attack.figures
        if not draws or outcome.shown is None or len(outcome.shown) == 0:
            return {}
        device, seal, data, model = self.plan.device, sealed.seal, sealed.data, state.model
        assert model is not None
        x, y = data.x[outcome.shown].to(device), data.y[outcome.shown].to(device)
        stem = cell_stem(cell.attack_name, cell.defense.name, cell.split, cell.threat.norm,
                         cell.threat.eps)
        with tempfile.TemporaryDirectory() as folder, seal.cell():
            reseed(model, cell_seed(cell))
            watch = seal.watch(attack.access, None, state.eot_samples, len(x))
            oracle = Oracle(model, attack.access, len(x), None, state.eot_samples,
                            guard=watch)
            paths = [Path(p) for p in attack.figures(oracle, x, y, Path(folder) / stem)]
            reason = seal.verdict(watch, oracle, attack)
            if reason is not None:
                raise RuntimeError(f"figures of {attack.name} broke the seal: {reason}")
            return {path.name: path.read_bytes() for path in paths
                    if path.resolve().parent == Path(folder).resolve()}
