"""What the minimum-norm attacks (FAB, FMN) share around their inner loops: which rounds to
run, keeping each sample's smallest adversarial norm over rounds, and handing the gate an
example within the cell's ε."""

from __future__ import annotations

import torch

from advbench.algorithms.apgd import top_classes
from advbench.oracle import Oracle
from advbench.threat import ThreatModel, clip_to_box, perturbation_size, project


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector shaped to broadcast against ``like`` (N×…)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def target_rounds(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, target_classes: int,
                  targets: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The rounds' targets: the given ``targets`` (one round); else, with ``target_classes``
    k > 0, each of the k wrong classes the clean input scores highest (one extra query);
    else one untargeted round (``None``)."""
    if targets is not None:
        return [targets]
    if target_classes <= 0:
        return [None]
    with torch.no_grad():
        return list(top_classes(oracle.logits(x).detach(), y, target_classes).T)


def keep_smaller(best: torch.Tensor, best_norm: torch.Tensor, rows: torch.Tensor,
                 example: torch.Tensor, found: torch.Tensor) -> None:
    """Where a round (run on the batch's ``rows``) found a smaller norm, keep its example."""
    better = found < best_norm[rows]
    best_norm[rows[better]] = found[better]
    best[rows[better]] = example[better]


def within_eps(x: torch.Tensor, best: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """The minimal examples where they lie within ε of ``x``, else projected onto the ε-ball:
    what the gate checks at the cell's ε (the norms found above it are reported apart)."""
    inside = per_sample(perturbation_size(best - x, threat.norm) <= threat.eps, x)
    return torch.where(inside, best, clip_to_box(x + project(best - x, threat)))
