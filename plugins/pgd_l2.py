"""PGD in L2, projected gradient descent (Madry, Makelov, Schmidt, Tsipras, Vladu 2018).

From a uniform random point of the L2 ball, repeat x ← clip₀¹(x₀ + Π_ε(x + α·g/‖g‖₂ − x₀)) with
g = ∇ₓ L(x, y) per sample (a zero gradient gives a zero step): an ascent step on the
cross-entropy, projected back onto the L2 ball of radius ε around the clean input x₀ (scaled by
min(1, ε/‖δ‖₂)) and clipped to the data box. Targeted: descend the target's cross-entropy.

Arguments:
    steps: gradient steps per restart (20).
    rel_step_size: α/ε; by default 2.5/steps, so that steps·α = 2.5ε (Madry's rule).
    restarts: independent random starts; per sample the first that fools is kept (1).
    random_start: start uniformly in the ball rather than at x₀ (True).
    early_exit: stop iterating a sample once it is fooled; its fooling example is kept, so the
        robust accuracy is the same as without, for fewer queries (True).
"""

from __future__ import annotations

from dataclasses import dataclass

from advbench import Attack, hookimpl
from advbench.algorithms.pgd import PGDAttack


@dataclass(kw_only=True)
class PGDL2(PGDAttack):
    name = "pgd-l2"
    norms = ("l2",)
    description = "Projected Gradient Descent (Madry et al. 2018), iterated L2 steps"


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [PGDL2]
