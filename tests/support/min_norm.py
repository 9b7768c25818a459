"""Helpers of the minimum-norm attacks' tests (FAB and FMN, both tiers)."""

from __future__ import annotations

import torch

from advbench import AttackContext, Oracle


def attack_once(cls, model, x, y, threat, targets=None, **options):
    """(gate result, smallest norms reported, oracle) through the harness's gate."""
    oracle = Oracle(model, "gradient", len(x))
    ctx = AttackContext(torch.Generator().manual_seed(0), targets)
    result = cls(**options).perturb(oracle, x, y, threat, ctx)
    return result, ctx.record["norm_before_projection"], oracle
