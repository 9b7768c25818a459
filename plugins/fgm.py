"""FGM, the Fast Gradient Method in L2 (Goodfellow et al. 2015; Miyato et al. 2017).

x' = clip₀¹(x + ε·g/‖g‖₂) per sample, g = ∇ₓ L(x, y): the maximiser of the loss's
linearisation over the L2 ball. A sample whose gradient is zero is left unchanged.
Targeted: step against the gradient of the target's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.threat import l2_normalize


@dataclass(kw_only=True)
class FGM(Attack):
    name = "fgm"
    norms = ("l2",)
    access = "gradient"
    targeted = True
    single_step = True
    description = "Fast Gradient Method (Goodfellow et al. 2015), one L2 step"

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        criterion = ctx.criterion(y)
        grad, _ = oracle.gradient(x, criterion.labels)
        return (x + criterion.sign * threat.eps * l2_normalize(grad)).clamp(0, 1)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FGM]
