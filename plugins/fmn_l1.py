"""FMN in L1, the Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio, NeurIPS 2021).

Per sample, the smallest L1 perturbation (the sum of absolute changes) FMN finds that changes
the decision: normalized gradient steps down the margin z_y − max_{j≠y} z_j, projected onto an
L1 ball (a soft threshold, which keeps the perturbation sparse) whose radius FMN adapts itself
(grown towards the linearized boundary until a first adversarial point, then shrunk when the
point fools and grown when it does not). The row's ``median_norm`` is the median of those sizes
(inf where none was found); the example returned for the cell's ε is the minimal one where it
lies within ε, else that one projected onto the ball. Algorithm: ``advbench.algorithms.fmn``.
Targeted (``--targeted``): reach the given class.

Arguments:
    iterations: gradient queries per sample and round (100).
    step_size: the first step's L2 length, annealed on a cosine to a hundredth of it (1.0).
    gamma: the radius's first relative change per step, annealed to 0.001 (0.05).
    target_classes: 0, the paper's untargeted FMN (the default); k: one round towards each of
        the k wrong classes the clean input scores highest, the smallest norm kept, as FAB-T
        does (the cpu preset: 3 rounds of 50 steps at γ 0.3).
    early_exit: stop iterating a sample once it has an adversarial example within ε (True);
        False gives every sample the whole budget, so its reported norm is FMN's smallest.
"""

from __future__ import annotations

from dataclasses import dataclass

from advbench import Attack, hookimpl
from advbench.algorithms.fmn import PRESETS, FMNAttack


@dataclass(kw_only=True)
class FMNL1(FMNAttack):
    name = "fmn-l1"
    norms = ("l1",)
    description = "Fast Minimum-Norm attack (Pintor et al. 2021), minimum-norm L1"
    presets = PRESETS  # cpu: 3 targeted rounds (advbench.algorithms.fmn)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FMNL1]
