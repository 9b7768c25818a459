"""Helpers of tests/unit/test_torch_func.py and tests/e2e/test_torch_func_e2e.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from advbench import Attack, AttackContext, Oracle, ThreatModel
from advbench.threat import clip_to_box, l2_normalize


@dataclass(kw_only=True)
class FuncFGSM(Attack):
    """One signed (L∞) or normalised (L2) gradient step, the gradient taken with
    ``torch.func.grad``: per sample under ``vmap`` (each row queried with its ``index``), or
    for the whole batch at once."""

    name = "func-fgsm"
    norms = ("linf", "l2")
    access = "gradient"
    targeted = True
    single_step = True
    max_queries = 1
    description = "FGSM/FGM with torch.func.grad (per sample under vmap, or batched)"

    per_sample: bool = True

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        criterion = ctx.criterion(y)
        if self.per_sample:
            def loss(xi, yi, i):
                return F.cross_entropy(oracle.logits(xi[None], index=i[None]), yi[None])

            g = vmap(grad(loss))(x, criterion.labels, torch.arange(len(x), device=x.device))
        else:
            g = grad(lambda z: F.cross_entropy(oracle.logits(z), criterion.labels,
                                               reduction="sum"))(x)
        step = g.sign() if threat.norm == "linf" else l2_normalize(g)
        return clip_to_box(x + criterion.sign * threat.eps * step)
