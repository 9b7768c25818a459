"""FAB in L2, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), a minimum-norm attack.

Per sample, the smallest L2 perturbation FAB finds that changes the decision: at each iteration
the nearest class's decision boundary is linearized, the current point and the clean input are
projected onto it within the box [0, 1], and a step biased towards the clean input follows; an
adversarial point is kept when smallest, then pulled back towards the clean input. The row's
``median_norm`` is the median of those sizes (inf where none was found); the example returned for
the cell's ε is the minimal one where it lies within ε, else that one projected onto the ball.
Algorithm: ``advbench.algorithms.fab``. Targeted (``--targeted``): reach the given class.

Arguments:
    iterations: gradient queries per sample and restart, each with one label query (100, the
        paper's); untargeted, a gradient query differentiates every class's logit.
    restarts: runs per sample, those after the first from a random start (1).
    target_classes: 0 for FAB (the nearest class's boundary at each step); k > 0 for FAB-T over
        the k highest-scoring wrong classes (``fab-t`` is that attack for both norms) (0).
    alpha_max: largest weight of the step from the clean input (0.1).
    eta: overshoot beyond the linearized boundary (1.05).
    beta: backward step towards the clean input after an adversarial point (0.9).
    early_exit: stop iterating a sample once it has an adversarial example within ε (True);
        False gives every sample the whole budget, so its reported norm is FAB's smallest.
"""

from __future__ import annotations

from dataclasses import dataclass

from advbench import Attack, hookimpl
from advbench.algorithms.fab import FABAttack


@dataclass(kw_only=True)
class FABL2(FABAttack):
    name = "fab-l2"
    norms = ("l2",)
    description = "Fast Adaptive Boundary attack (Croce & Hein 2020), minimum-norm L2"
    # Left out of a cascade against a randomized defense (AutoAttack's version for them has no
    # FAB): a Jacobian per step under EOT costs ~10× a gradient step and FAB's linear model of a
    # noisy classifier is a poor one.
    against_randomized = False
    minimum_norm = True  # a cascade runs it outside the chain (advbench.running.plan)
    presets = {"smoke": {"iterations": 10}, "cpu": {"iterations": 20},
               "paper": {"iterations": 100}}


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FABL2]
