"""One cell of the matrix: attack a defended model on the evaluation samples and grade it.

Only samples the defended model classifies correctly are attacked (the others already count as
not robust). Predictions come from the harness's own forward pass, never from the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .attack import Attack, AttackContext
from .data import Split
from .oracle import Oracle, model_labels
from .threat import ThreatModel


@dataclass
class CellOutcome:
    """Per-sample outcome of one cell (CPU tensors over the evaluation samples)."""

    clean_correct: torch.Tensor
    adv_pred: torch.Tensor
    labels: torch.Tensor
    queries: torch.Tensor
    invalid_reason: str | None = None

    @property
    def adv_correct(self) -> torch.Tensor:
        return self.adv_pred == self.labels

    @property
    def robust(self) -> torch.Tensor:
        """Robust = correct before and after the attack."""
        return self.clean_correct & self.adv_correct


@torch.no_grad()
def is_randomized(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two forward passes on the same inputs differ (a random defense)."""
    model.eval()
    return not torch.equal(model(x), model(x))


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Labels predicted by ``model`` for ``x`` (on the CPU), batch by batch (−1: abstained)."""
    model.eval()
    parts = [model_labels(model, x[i : i + batch_size].to(device)).cpu()
             for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def attack_cell(
    model: nn.Module,
    attack: Attack,
    data: Split,
    clean_pred: torch.Tensor,
    threat: ThreatModel,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    targets: torch.Tensor | None = None,
    eot_samples: int = 1,
    on_batch: Callable[[int], None] = lambda n: None,
) -> CellOutcome:
    """Run ``attack`` on every correctly classified sample of ``data``, batch by batch.

    With ``targets`` (one label per sample), the attack is targeted and samples whose target
    is their own label are not attacked. ``eot_samples`` > 1 averages gradients over that many
    draws of a randomized model.
    """
    clean_correct = clean_pred == data.y
    adv_pred = clean_pred.clone()
    queries = torch.zeros(len(data), dtype=torch.long)
    eligible = clean_correct if targets is None else clean_correct & (targets != data.y)
    attacked = torch.nonzero(eligible).flatten()
    for start in range(0, len(attacked), batch_size):
        index = attacked[start : start + batch_size]
        x, y = data.x[index].to(device), data.y[index].to(device)
        oracle = Oracle(model, attack.access, len(index), getattr(attack, "max_queries", None),
                        eot_samples)
        ctx = AttackContext(torch.Generator(device=device).manual_seed(seed + start),
                            None if targets is None else targets[index].to(device))
        result = attack.perturb(oracle, x, y, threat, ctx)
        if result.x_adv is None:
            return CellOutcome(clean_correct, adv_pred, data.y, queries, result.reason)
        adv_pred[index] = predict(model, result.x_adv, batch_size, device)
        queries[index] = oracle.queries.cpu()
        on_batch(len(index))
    return CellOutcome(clean_correct, adv_pred, data.y, queries)
