"""Random noise on the ε-sphere, L∞ and L2: a weak baseline that needs labels only.

Each draw is a Gaussian direction g scaled onto the sphere of radius ε: ε·g/‖g‖₂ in L2, and
ε·sign(g) in L∞ (a random corner of the ε-cube, the L∞-sphere's points farthest from x in L2).
The noisy input is clipped to [0, 1]. A sample keeps the first of ``draws`` draws that changes
its label (targeted: that reaches its target), else the last draw. Each draw queries the labels
of the samples still unfooled, so a sample spends at most ``draws`` queries.

Any real attack should beat it; a defense that random noise breaks more often than gradient
attacks do is masking its gradients (bench's sanity battery flags that).

Arguments:
    draws: random draws per sample (10).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.threat import clip_to_box, l2_normalize


def sphere_noise(like: torch.Tensor, threat: ThreatModel,
                 generator: torch.Generator) -> torch.Tensor:
    """One random perturbation per sample of ``like``, of size exactly ε in ``threat.norm``."""
    g = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    if threat.norm == "linf":
        return threat.eps * g.sign()
    return threat.eps * l2_normalize(g)


@dataclass(kw_only=True)
class GaussianNoise(Attack):
    name = "gaussian-noise"
    norms = ("linf", "l2")
    access = "decision"
    targeted = True
    randomized = True
    description = "random noise on the ε-sphere (L∞, L2), first of `draws` that fools: a baseline"

    draws: int = 10

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError("draws must be at least 1")

    @property
    def max_queries(self) -> int:
        """Per-sample query budget the harness enforces: one label query per draw."""
        return self.draws

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        goal = y if ctx.targets is None else ctx.targets
        best = x.clone()
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.draws):
            if active.numel() == 0:
                break
            candidate = clip_to_box(x[active] + sphere_noise(x[active], threat, ctx.generator))
            labels = oracle.labels(candidate, active)
            done = labels == goal[active] if ctx.targets is not None else labels != goal[active]
            best[active] = candidate
            active = active[~done]
        return best


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [GaussianNoise]
