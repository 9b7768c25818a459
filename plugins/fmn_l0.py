"""FMN in L0, the Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio, NeurIPS 2021).

Per sample, the fewest pixels FMN finds whose change alters the decision (a pixel counts once
however many of its channels change): normalized gradient steps down the margin
z_y − max_{j≠y} z_j, keeping only the k most-changed pixels, k a budget FMN adapts itself
(aimed at the linearized count of pixels to the boundary until a first adversarial point,
then shrunk by at least one when the point fools and grown when it does not). The row's
``median_norm`` is the median of those counts (inf where none was found); the example returned
for the cell's ε is the minimal one where it changes at most ε pixels, else its ε most-changed
pixels. Algorithm: ``advbench.algorithms.fmn``. Targeted (``--targeted``): reach the given
class.

Arguments: the fields of :class:`advbench.algorithms.fmn.FMNAttack` (``iterations``,
``step_size``, ``gamma``, ``target_classes``, ``early_exit``); the cpu preset runs 3 rounds
towards the most likely wrong classes, 50 steps each at γ 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

from advbench import Attack, hookimpl
from advbench.algorithms.fmn import PRESETS, FMNAttack


@dataclass(kw_only=True)
class FMNL0(FMNAttack):
    name = "fmn-l0"
    norms = ("l0",)
    description = "Fast Minimum-Norm attack (Pintor et al. 2021), minimum-norm L0 (pixels)"
    presets = PRESETS  # cpu: 3 targeted rounds (advbench.algorithms.fmn)
    # Left out of a cascade against a randomized defense: its samples are rarely broken within
    # the default ε of one pixel, so none stops early, and each of its 150 steps is a gradient
    # under EOT: 90 of the default run's 98 s of FMN-L0 went to gaussian-smoothing (2026-12-04).
    against_randomized = False


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FMNL0]
