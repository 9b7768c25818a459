"""After a defense's last cell: its worst-case rows, and the sanity battery's flags in its rows.

The worst case of a threat model (split, norm, ε) with two attacks or more counts a sample as
robust only if every valid attack failed on it; ``broken_by`` counts the samples each attack
broke itself. In a cascade that includes the minimum-norm attacks that ran outside the chain
on every sample (:func:`advbench.running.plan.outside_chain`): their rows are their own, not
cumulative (cascade column ""), and the worst case's cascade column names them apart. The
flags come from :mod:`advbench.reporting.sanity`, with each finished cell's per-sample outcome
so black-box attacks are compared with the per-sample worst case of the white-box ones. Both
run without the defended model when every cell was reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import torch

from advbench.reporting.results import RADIUS_GRID, cell_row, radius_columns
from advbench.reporting.sanity import (
    cell_flags,
    defense_flags,
    eps_zero_differs,
    zero_gradient_fraction,
)
from advbench.running.evaluate import CellOutcome, prediction_draws
from advbench.running.keys import Keys
from advbench.running.plan import WORST_CASE, Cell, Plan, outside_chain
from advbench.running.prepare import Defended, add_certification, is_bound_certificate, reseed
from advbench.running.run_folder import Previous
from advbench.running.store import Group

# Columns a worst case shares with its threat model's cells: what the model gave them.
SHARED = ["certified_accuracy", "certified_accuracy_ci_low", "certified_accuracy_ci_high",
          "certifier", "abstain_rate",
          *(column for radius in RADIUS_GRID for column in radius_columns(radius))]


def chain_text(text: str, outside: set[str]) -> str:
    """A worst case's cascade column (``a > b > c``, as the scheduler gives it) with the
    attacks of ``outside`` (minimum-norm ones, which ran on every sample) named apart:
    ``a > b (+ c on every sample)``; "" where no attack was chained (nothing skipped)."""
    names = text.split(" > ") if text else []
    apart = [name for name in names if name in outside]
    if not apart:
        return text
    chained = [name for name in names if name not in outside]
    if not chained:
        return ""
    return f"{' > '.join(chained)} (+ {', '.join(apart)} on every sample)"


def combine(members: Sequence[tuple[Cell, CellOutcome]]) -> tuple[CellOutcome, dict[str, int]]:
    """The per-sample worst case of one threat model's finished cells, and the samples each
    attack broke itself."""
    first = members[0][1]
    broken_by_any = torch.stack([~o.robust for _, o in members]).any(dim=0)
    # The worst case's "prediction" is wrong wherever some attack fooled the model.
    worst_pred = torch.where(broken_by_any, -1, first.labels)
    combined = CellOutcome(first.clean_correct, worst_pred, first.labels,
                           torch.stack([o.queries for _, o in members]).sum(dim=0))
    return combined, {cell.attack_name: int(o.fooled_here.sum()) for cell, o in members}


class Aggregator:
    """Worst cases and flags for the defenses of one plan; ``previous``: the rows and outcomes
    of the run being resumed, by cell key."""

    def __init__(self, plan: Plan, keys: Keys, previous: Previous) -> None:
        self.plan, self.keys, self.previous = plan, keys, previous

    def worst_cases(self, group: Group, cascade: Callable[[Cell], str]
                    ) -> Iterator[tuple[dict[str, Any], CellOutcome]]:
        """Per split, norm and ε with two attacks or more, the worst-case row and outcome
        (``cascade`` gives its cascade column), one at a time, for the caller to keep. First,
        the rows of the attacks a cascade ran outside its chain (minimum-norm ones) lose the
        chain's cascade column (their robust accuracy is their own)."""
        defense, state = group.defense, group.state
        outside = {entry.name for entry in self.plan.attacks
                   if outside_chain(group.entry, entry)}
        for row in group.rows:  # skipped nothing: its own robust accuracy, not the chain's
            if row["attack"] in outside and row.get("cascade"):
                row["cascade"] = ""
        threats: dict[tuple[str, str, float], list[tuple[Cell, CellOutcome]]] = {}
        for cell, outcome in sorted(group.finished, key=lambda item: self.plan.cells.index(
                item[0])):
            threats.setdefault((cell.split, cell.threat.norm, cell.threat.eps), []).append(
                (cell, outcome))
        for (split, _, _), members in threats.items():
            if len(members) < 2:
                continue
            combined, broken = combine(members)
            cell = Cell(members[0][0].defense, None, members[0][0].threat, split)
            row = cell_row(self.keys.identity(cell, None, defense), outcome=combined)
            row["broken_by"] = json.dumps(broken, sort_keys=True)
            row["cascade"] = chain_text(cascade(cell), outside)
            if state is not None:
                add_certification(row, cell, combined, state)
                row["abstain_rate"] = float((state.clean_pred[split] == -1).float().mean())
                row["adaptive"] = state.adaptive
            else:
                self.reused_worst_case(group, row, combined)
            yield row, combined

    def reused_worst_case(self, group: Group, row: dict[str, Any], combined: CellOutcome
                          ) -> None:
        """A worst-case row of a defense whose cells were all reused, without its model: what
        the model gave it is the same in its cells' rows (certificates at its ε, abstentions),
        and broken certificates are counted on the certified samples cached with them."""
        where = (row["split"], row["norm"], row["eps"])
        member = next(r for r in group.rows if r["attack"] != WORST_CASE
                      and (r["split"], r["norm"], r["eps"]) == where)
        row.update({column: member[column] for column in SHARED if column in member})
        row["adaptive"] = next((r["adaptive"] for r in group.rows if r.get("adaptive")), "")
        certified = group.certified.get((row["split"], row["eps"]))
        if certified is not None and is_bound_certificate(row["certifier"]):
            row["certified_broken"] = int((certified & ~combined.robust).sum())
        elif row["cell_key"] in self.previous:  # resumed: counted before, on the same samples
            before, outcome = self.previous[row["cell_key"]]
            if torch.equal(outcome.robust, combined.robust):
                row["certified_broken"] = before["certified_broken"]

    def battery_inputs(self, rows: list[dict[str, Any]], state: Defended | None
                       ) -> tuple[float, int, bool, int]:
        """What the defense-wide checks read: the zero-gradient fraction, the EOT draws,
        whether BPDA ran, the draws behind each graded prediction. Measured on the model, or,
        when every cell was resumed, as recorded in its rows."""
        if state is not None:
            assert state.model is not None
            data = next(iter(self.plan.evaluation.values()))
            try:
                reseed(state.model, self.plan.config.seed)  # the same noise under any executor
                zero = zero_gradient_fraction(state.model, data, self.plan.device)
            except Exception:  # the model fails outside its cells (its server died, say):
                zero = 0.0  # its rows already say why
            return zero, state.eot_samples, state.bpda, prediction_draws(state.model,
                                                                          state.eot_samples)
        zero = float(rows[0].get("zero_grad_fraction", 0.0)) if rows else 0.0
        eot = int(rows[0].get("eot_samples", 1)) if rows else 1
        recorded = rows[0].get("prediction_draws") if rows else None
        draws = 1 if recorded is None or pd.isna(recorded) else int(recorded)
        bpda = any("bpda" in str(row.get("adaptive") or "") for row in rows)
        return zero, eot, bpda, draws

    def flag(self, rows: list[dict[str, Any]], state: Defended | None,
             finished: Sequence[tuple[Cell, CellOutcome]] = ()) -> None:
        """Run the sanity battery over one defense's rows and write its flags into them (with
        each finished cell's per-sample outcome, so black-box attacks are compared with the
        per-sample worst case of the white-box ones)."""
        zero, eot, bpda, draws = self.battery_inputs(rows, state)
        attacks = {entry.name: entry for entry in self.plan.attacks}
        checked = [row for row in rows if row["valid"] and row["attack"] in attacks]
        robust = {(cell.attack_name, cell.threat.norm, cell.threat.eps, cell.split):
                  outcome.robust.tolist() for cell, outcome in finished}
        cells = pd.DataFrame([{**row, "access": attacks[row["attack"]].cls.access,
                               "single_step": bool(attacks[row["attack"]].cls.single_step),
                               "minimum_norm": bool(attacks[row["attack"]].cls.minimum_norm),
                               "robust_samples": robust.get((row["attack"], row["norm"],
                                                             row["eps"], row["split"]))}
                              for row in checked])
        found = cell_flags(cells) if checked else {}
        per_row = {id(row): found.get(i, []) for i, row in enumerate(checked)}
        worst = [row for row in rows if row["valid"] and row["attack"] == WORST_CASE]
        if worst:  # the ε = 0 invariant holds for the per-sample union too
            for i, message in eps_zero_differs(pd.DataFrame(worst)):
                per_row[id(worst[i])] = [message]
        defense = rows[0]["defense"] if rows else ""
        left_out = sorted({cell.attack_name for cell in self.plan.left_out
                           if cell.defense.name == defense})
        common = defense_flags(zero, eot, bpda, left_out)
        for row in rows:
            row["zero_grad_fraction"], row["eot_samples"] = zero, eot
            row["prediction_draws"] = draws
            row["flags"] = "; ".join(common + per_row.get(id(row), []))
