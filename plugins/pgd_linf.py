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

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.iterative import pgd


@dataclass(kw_only=True)
class PGDLinf(Attack):
    name = "pgd-linf"
    norms = ("linf",)
    access = "gradient"
    targeted = True
    randomized = True
    description = "Projected Gradient Descent (Madry et al. 2018), iterated L∞ sign steps"

    steps: int = 20
    rel_step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    early_exit: bool = True

    def __post_init__(self) -> None:
        if self.rel_step_size is None:
            self.rel_step_size = 2.5 / max(self.steps, 1)

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        return pgd(oracle.gradient, x, y, threat, steps=self.steps,
                   step_size=float(self.rel_step_size) * threat.eps, targets=ctx.targets,
                   restarts=self.restarts, random_start=self.random_start,
                   early_exit=self.early_exit, generator=ctx.generator, logits=oracle.logits)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [PGDLinf]
