"""The computing side of a run: what an executor runs for the driver.

A :class:`Worker` prepares defended models (``advbench.running.prepare``: training and the model
cache, sealing, certification) and runs attack cells (``advbench.running.cells``: the out-of-
memory retry, the attack's figures). It writes nothing into the run folder and keeps no results:
it returns them, so it runs the same in the driver's process, in a pool of processes or on a Ray
cluster (``advbench.running.executors``), and the driver alone records what comes back.
"""

from __future__ import annotations

from torch import nn

from advbench.defense import Defense
from advbench.running.cells import CellResult, CellRunner, targeted_success
from advbench.running.keys import Keys
from advbench.running.plan import Cell, Plan
from advbench.running.prepare import (
    Defended,
    DefenseFailed,
    Preparer,
    is_bound_certificate,
    reseed,
)
from advbench.running.progress import RunProgress

__all__ = ["CellResult", "Defended", "DefenseFailed", "Worker", "is_bound_certificate",
           "reseed", "targeted_success"]


class Worker:
    """Prepares each defended model of one plan (``models``) and runs its cells (``cells``);
    ``keys`` names the cells. Sent whole to each process of a pool."""

    def __init__(self, plan: Plan, user_model: nn.Module | None,
                 progress: RunProgress | None = None) -> None:
        progress = progress or RunProgress(False)
        self.plan = plan
        self.models = Preparer(plan, user_model, progress)
        self.keys = Keys(plan, user_model, self.models.model_parts)
        self.cells = CellRunner(plan, self.models, self.keys, progress)

    def defended_state(self, defense: Defense) -> Defended:
        """The defended model ready to attack (:meth:`Preparer.defended_state`)."""
        return self.models.defended_state(defense)

    def materialize(self, state: Defended, defense: Defense) -> Defended:
        """A state that crossed a process boundary, with its model again."""
        return self.models.materialize(state, defense)

    def run_cell(self, cell: Cell, defense: Defense, state: Defended) -> CellResult:
        """One cell's result (:meth:`CellRunner.run_cell`)."""
        return self.cells.run_cell(cell, defense, state)

    def close(self) -> None:
        """Stop what the cells started (the attack process)."""
        self.cells.close()
