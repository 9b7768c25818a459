"""APGD-DLR, Auto-PGD on the Difference of Logits Ratio loss (Croce & Hein 2020), L∞ and L2.

The DLR loss −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3) is invariant to shifting and scaling the
logits, so a model that saturates its softmax (cross-entropy gradients exactly zero) still
gives a direction. Same step-size schedule as APGD-CE (``advbench.algorithms.apgd``). Targeted: the
targeted DLR towards ``ctx.targets``.

Arguments:
    iterations: gradient queries per sample and restart (100, AutoAttack's).
    restarts: runs from fresh random starts, each on the samples no earlier run fooled (1).
    rho: a checkpoint halves η when the loss rose in fewer than this share of its steps (0.75).
    momentum: weight α of the new step against the previous one (0.75).
    random_start: start uniformly in the ball rather than at x₀ (True).
    early_exit: stop iterating a sample once it is fooled; its first fooling example is kept
        (True).
"""

from __future__ import annotations

from dataclasses import dataclass

from advbench import Attack, hookimpl
from advbench.algorithms.apgd import APGDAttack


@dataclass(kw_only=True)
class APGDDLR(APGDAttack):
    name = "apgd-dlr"
    loss = "dlr"
    description = "Auto-PGD on the scale-invariant DLR loss (Croce & Hein 2020), L∞ and L2"
    # Sized to the cpu matrix like apgd-ce (measurements in advbench_plugins.apgd_ce).
    presets = {"smoke": {"iterations": 10}, "cpu": {"iterations": 10},
               "paper": {"iterations": 50}}


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [APGDDLR]
