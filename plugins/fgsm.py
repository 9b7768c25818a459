"""FGSM, the Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015), L∞.

x' = clip₀¹(x + ε·sign(∇ₓ L(x, y))): the maximiser of the loss's linearisation over the L∞ ball.
Targeted: x' = clip₀¹(x − ε·sign(∇ₓ L(x, t))), stepping down the target's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl


@dataclass(kw_only=True)
class FGSM(Attack):
    name = "fgsm"
    norms = ("linf",)
    access = "gradient"
    targeted = True
    single_step = True
    description = "Fast Gradient Sign Method (Goodfellow et al. 2015), one L∞ step"

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        criterion = ctx.criterion(y)
        grad, _ = oracle.gradient(x, criterion.labels)
        return (x + criterion.sign * threat.eps * grad.sign()).clamp(0, 1)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FGSM]
