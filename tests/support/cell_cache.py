"""Helpers of tests/unit/test_cell_cache.py and tests/e2e/test_cell_cache_e2e.py."""

from __future__ import annotations

import torch

from advbench.reporting.results import blank_row
from advbench.running.cell_cache import CachedCell
from advbench.running.evaluate import CellOutcome

TINY = dict(model="sample_models:tiny_mlp", preset="smoke", n_train=1000, n_eval=40,
            defenses="none")


def entry_row(valid: bool = True, **values) -> dict:
    """A cached cell's row as the worker writes one: every column, its identity filled in."""
    return {**blank_row(), "dataset": "fashion-mnist", "model": "m", "defense": "none",
            "attack": "fgsm", "norm": "linf", "eps": 0.1, "split": "test", "seed": 0,
            "schema_version": 1, "valid": valid, "status": "ok" if valid else "invalid",
            **values}


def cell(value: int, n: int = 50) -> CachedCell:
    """A cached cell whose first value/10 of its n samples (all correct) withstood the attack."""
    labels = torch.arange(n) % 10
    adv_pred = torch.where(torch.arange(n) < value * n // 10, labels, (labels + 1) % 10)
    outcome = CellOutcome(torch.ones(n, dtype=torch.bool), adv_pred, labels,
                          torch.full((n,), value), needed_norm=torch.rand(n))
    row = entry_row(n_samples=n, clean_accuracy=1.0, robust_accuracy=value / 10)
    return CachedCell(row, outcome, torch.zeros(n, dtype=torch.bool), {"history": None})
