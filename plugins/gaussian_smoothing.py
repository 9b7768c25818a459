"""Randomized smoothing with Gaussian noise (Cohen, Rosenfeld & Kolter 2019), certified in L2.

Training: the base model learns on x + N(0, σ²I) (noise seeded from the run's seed). Defended
classifier: ``advbench.algorithms.smoothing.SmoothedClassifier`` around it — ``predict`` is PREDICT
(the majority of ``n`` noisy votes, abstaining (−1) when a binomial test at level α cannot separate
the top two classes; an abstention counts as an error), ``certify`` is CERTIFY (ĉ from ``n0``
votes, one-sided Clopper–Pearson lower bound p̲_A from ``n`` fresh votes at level α, radius
σ·Φ⁻¹(p̲_A), abstain if p̲_A < ½), and ``forward`` is the soft classifier (log of the mean softmax
over ``m`` draws) that gradient attacks differentiate: random, so attacks must use EOT.

The largest certifiable radius is σ·Φ⁻¹(α^(1/n)): with the CPU defaults (n = 200, α = 0.001)
1.83σ, i.e. 0.46 at σ = 0.25 — enough for radius 0.25; n = 1000 gives 2.46σ and Cohen et al.'s
n = 100 000 gives 3.81σ. Every prediction of an attacked sample costs n forward passes, which is
what sizes n for a 2-core CPU. ``advbench.algorithms.smoothing.max_certifiable_radius`` computes it.

Arguments:
    sigma: noise standard deviation, in training and smoothing (0.25).
    n0: selection votes of CERTIFY (50); n: votes of PREDICT and estimation votes of CERTIFY
        (200); alpha: failure probability of both (0.001).
    m: noise draws per forward pass of the soft classifier (4); the harness's EOT multiplies it.
    batch: rows (samples × draws) sent through the base model at once (4096).
    seed: seed of the smoothing noise; the module's ``reseed(seed)`` restarts it (0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from advbench import Defense, Split, TrainContext, hookimpl
from advbench.algorithms.smoothing import SmoothedClassifier


@dataclass(kw_only=True)
class GaussianSmoothing(Defense):
    name = "gaussian-smoothing"
    randomized = True
    description = "randomized smoothing (Cohen et al. 2019): noise training, L2 certificate"
    # Randomized smoothing pays n forward passes per prediction and m per query.
    presets = {"cpu": {"n": 100, "m": 2}}
    preset_epochs = {"cpu": 4}  # half the split at cpu: twice the epochs, the same steps
    # Only sigma shapes the base model; the rest sizes PREDICT/CERTIFY around it.
    wrapper_fields = frozenset({"n0", "n", "alpha", "m", "batch", "seed"})

    sigma: float = field(default=0.25, metadata={"gt": 0})
    n0: int = field(default=50, metadata={"ge": 1})
    n: int = field(default=200, metadata={"ge": 1})
    alpha: float = field(default=0.001, metadata={"gt": 0, "lt": 1})
    m: int = field(default=4, metadata={"ge": 1})
    batch: int = field(default=4096, metadata={"ge": 1})
    seed: int = field(default=0, metadata={"ge": 0})

    # Set by fit (not configuration): the training noise's generator.
    _generator: ClassVar[torch.Generator | None] = None

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ValueError("sigma must be > 0")
        if min(self.n0, self.n, self.m, self.batch) < 1 or not 0 < self.alpha < 1:
            raise ValueError("need n0, n, m, batch >= 1 and 0 < alpha < 1")

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      progress: float) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self._generator, device=x.device, dtype=x.dtype)
        return F.cross_entropy(model(x + self.sigma * noise), y)

    def fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        # The instance's generator over the ClassVar default (kept out of config()).
        self._generator = torch.Generator(  # type: ignore[misc]
            device=ctx.device).manual_seed(ctx.seed + 1)
        try:
            return super().fit(model, train, ctx)
        finally:
            self._generator = None  # type: ignore[misc]

    def wrap(self, model: nn.Module) -> nn.Module:
        return SmoothedClassifier(model, self.sigma, n0=self.n0, n=self.n, alpha=self.alpha,
                                  m=self.m, batch=self.batch, seed=self.seed)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [GaussianSmoothing]
