"""PGD in L∞, projected gradient descent (Madry, Makelov, Schmidt, Tsipras, Vladu 2018).

From a uniform random point of the ball, repeat x ← clip₀¹(x + Π_ε(x + α·sign(∇ₓ L(x, y)) − x₀)):
an ascent step on the cross-entropy, projected back onto the L∞ ball of radius ε around the clean
input x₀ and clipped to the data box. Targeted: descend the target's cross-entropy instead.

Arguments:
    steps: gradient steps per restart (20).
    rel_step_size: α/ε; by default 2.5/steps, so that steps·α = 2.5ε (Madry's rule: the walk
        can cross the ball and back).
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
class PGDLinf(PGDAttack):
    name = "pgd-linf"
    norms = ("linf",)
    description = "Projected Gradient Descent (Madry et al. 2018), iterated L∞ sign steps"


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [PGDLinf]
