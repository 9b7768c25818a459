"""FMN in L∞, the Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio, NeurIPS 2021).

Per sample, the smallest L∞ perturbation FMN finds that changes the decision: normalized
gradient steps down the margin z_y − max_{j≠y} z_j, projected onto an L∞ ball whose radius FMN
adapts itself (grown towards the linearized boundary until a first adversarial point, then
shrunk when the point fools and grown when it does not). The row's ``median_norm`` is the median
of those sizes (inf where none was found); the example returned for the cell's ε is the minimal
one where it lies within ε, else that one projected onto the ball. Algorithm:
``advbench.algorithms.fmn``. Targeted (``--targeted``): reach the given class.

Arguments: the fields of :class:`advbench.algorithms.fmn.FMNAttack` (``iterations``,
``step_size``, ``gamma``, ``target_classes``, ``early_exit``); the cpu preset runs 3 rounds
towards the most likely wrong classes, 50 steps each at γ 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

from advbench import Attack, hookimpl
from advbench.algorithms.fmn import PRESETS, FMNAttack


@dataclass(kw_only=True)
class FMNLinf(FMNAttack):
    name = "fmn-linf"
    norms = ("linf",)
    description = "Fast Minimum-Norm attack (Pintor et al. 2021), minimum-norm L∞"
    presets = PRESETS  # cpu: 3 targeted rounds (advbench.algorithms.fmn)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FMNLinf]
