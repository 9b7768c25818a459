"""Auto-PGD (Croce & Hein, ICML 2020: "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), L∞ and L2, written from the paper's Algorithm 1.

A budget of ``iterations`` gradient queries per sample and restart; iterate ``x_k`` is queried
at iteration ``k`` = 0 … N−1 (so a sample never fooled costs exactly N queries per restart).

* Step size: η starts at 2ε (per sample). Checkpoints ``w_j = ⌈p_j·N⌉`` with ``p_0 = 0``,
  ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`` (:func:`checkpoints`).
  At a checkpoint η is halved, and the sample restarts from the best point found so far, if
  (1) its loss rose in fewer than ρ = 0.75 of the steps since the last checkpoint, or (2) its η
  was not halved at the last checkpoint and its best loss has not improved since.
* Step: ``z = P(x_k + η·s(∇f))`` with ``s`` = sign (L∞) or ``g/‖g‖₂`` (L2), then
  ``x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))``, α = 0.75 (the first step has no
  momentum); ``P`` projects onto the ε-ball and clips to the data box [0, 1].
* Losses: cross-entropy (``ce``) or DLR (``dlr``, :mod:`advbench.algorithms.losses`); with targets,
  the target's negated cross-entropy or the targeted DLR.
* Output: like :mod:`advbench.algorithms.pgd`, the *first iterate that fools* each sample
  (its criterion: misclassified, or classified as its target), else its best-loss point.
  With ``early_exit`` fooled samples stop being iterated and queried, which changes the work
  done, never the output. Restarts run on the samples no earlier restart fooled.

Everything is vectorised over the batch: per-sample step sizes, counters and best points are
tensors, and every gradient is the oracle's (``gradient(x, labels, index, loss=...)``, the
signature of :meth:`advbench.Oracle.gradient`), so the harness counts every query.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advbench.algorithms.losses import (
    dlr,
    dlr_loss,
    negative_cross_entropy,
    targeted_dlr,
    targeted_dlr_loss,
)
from advbench.algorithms.pgd import sample_start
from advbench.attack import Attack, AttackContext, Criterion, Misclassification, criterion_for
from advbench.oracle import LossFn, Oracle, cross_entropy_sum
from advbench.threat import ThreatModel, l2_normalize, project

LossGradientFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
LOSSES = ("ce", "dlr")
NORMS = ("linf", "l2")


def checkpoints(iterations: int, first: float = 0.22, shrink: float = 0.03,
                least: float = 0.06) -> list[int]:
    """The iterations ``w_j = ⌈p_j·N⌉`` where APGD may halve its step, ``w_0 = 0`` included.

    ``p_0 = 0``, ``p_1 = first``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − shrink, least)``, while
    ``p_j ≤ 1``. N = 100 gives 0, 22, 41, 57, 70, 80, 87, 93, 99 (the paper's schedule)."""
    fractions = [0.0, first]
    while True:
        following = fractions[-1] + max(fractions[-1] - fractions[-2] - shrink, least)
        if following > 1 + 1e-9:
            break
        fractions.append(following)
    # round() first: 0.22 + 0.19 is 0.41000000000000003 in floats, whose ⌈·100⌉ would be 42.
    marks = [math.ceil(round(p * iterations, 6)) for p in fractions]
    return sorted(set(mark for mark in marks if mark < max(iterations, 1)) | {0})


def _loss_of(loss: str, targeted: bool, y: torch.Tensor,
             ) -> tuple[LossFn, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """(summed loss for the oracle, per-sample value from logits and oracle labels)."""
    if loss == "ce":
        if targeted:
            return negative_cross_entropy, lambda z, t: -nn.functional.cross_entropy(
                z, t, reduction="none")
        return cross_entropy_sum, lambda z, t: nn.functional.cross_entropy(z, t, reduction="none")
    if targeted:
        return targeted_dlr_loss(y), lambda z, t: targeted_dlr(z, y, t)
    return dlr_loss, dlr


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    return grad.sign() if norm == "linf" else l2_normalize(grad)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _into_ball(point: torch.Tensor, x: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    return (x + project(point - x, threat)).clamp(0, 1)


@dataclass(frozen=True)
class APGDSettings:
    """APGD's terms: ``iterations`` (gradient queries per sample and restart), ``restarts``,
    the ``loss`` (``ce`` or ``dlr``), ``rho`` (the share of loss increases a checkpoint asks
    for), ``momentum`` (α), ``random_start`` and ``early_exit`` (module docstring)."""

    iterations: int
    restarts: int = 1
    loss: str = "ce"
    rho: float = 0.75
    momentum: float = 0.75
    random_start: bool = True
    early_exit: bool = True


def apgd_run(
    gradient: LossGradientFn, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
    threat: ThreatModel, start: torch.Tensor, settings: APGDSettings, *,
    targets: torch.Tensor | None = None, criterion: Criterion | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run from ``start`` on the batch rows ``rows`` (``x``, ``y``: those rows), as
    ``settings`` say (``restarts`` and ``random_start`` are :func:`apgd_restarts`'s).

    ``targets`` steer the loss; ``criterion`` (of those rows; default: misclassifying ``y``)
    decides which iterates fool — APGD-T's targeted loss still succeeds on any wrong class.
    Returns per row: the first fooling iterate, else the best-loss point; whether it fooled;
    the best loss reached (comparable between runs of the same loss and targets)."""
    n = len(x)
    iterations, loss, early_exit = settings.iterations, settings.loss, settings.early_exit
    rho, momentum = settings.rho, settings.momentum
    criterion = Misclassification(y) if criterion is None else criterion
    labels = targets if targets is not None else y
    out = start.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    best = torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device)
    best_x, best_grad = start.clone(), torch.zeros_like(start)
    # Per active row (shrunk together when fooled rows leave).
    active: dict[str, Any] = {
        "pos": torch.arange(n, device=x.device), "x": x, "y": y, "labels": labels,
        "index": rows, "cur": start, "prev": start, "criterion": criterion,
        "eta": torch.full((n,), 2 * threat.eps, dtype=x.dtype, device=x.device),
        "rises": torch.zeros(n, dtype=torch.long, device=x.device),
        "last": torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device),
        "reduced": torch.zeros(n, dtype=torch.bool, device=x.device),
        "best_then": torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device),
    }
    marks = checkpoints(iterations)
    previous_mark = 0
    for k in range(iterations):
        a = active
        oracle_loss, value_of = _loss_of(loss, targets is not None, a["y"])
        grad, logits = gradient(a["cur"], a["labels"], a["index"], loss=oracle_loss)
        logits = logits.detach()
        value = value_of(logits, a["labels"]).detach()
        hit = a["criterion"].is_adversarial(logits)
        if bool(hit.any()):
            new = hit & ~fooled[a["pos"]]
            out[a["pos"][new]] = a["cur"][new]
            fooled[a["pos"][new]] = True
            if early_exit:
                keep = ~hit
                active = a = {name: tensor[keep] for name, tensor in a.items()}
                grad, value = grad[keep], value[keep]
                if len(a["pos"]) == 0:
                    break
        pos = a["pos"]
        better = value > best[pos]
        best[pos[better]] = value[better]
        best_x[pos[better]] = a["cur"][better]
        best_grad[pos[better]] = grad[better]
        if k > 0:
            a["rises"] = a["rises"] + (value > a["last"]).long()
        a["last"] = value
        if k == 0:
            a["best_then"] = best[pos].clone()
        elif k in marks:
            span = k - previous_mark
            halve = (a["rises"] < rho * span) | (~a["reduced"] & (best[pos] <= a["best_then"]))
            a["eta"] = torch.where(halve, a["eta"] / 2, a["eta"])
            back = _per_sample(halve, a["cur"])
            a["cur"] = torch.where(back, best_x[pos], a["cur"])
            grad = torch.where(back, best_grad[pos], grad)
            a["last"] = torch.where(halve, best[pos], value)
            a["reduced"], a["best_then"] = halve, best[pos].clone()
            a["rises"] = torch.zeros_like(a["rises"])
            previous_mark = k
        if k == iterations - 1:
            break
        cur, xs = a["cur"], a["x"]
        step = _per_sample(a["eta"], cur) * _direction(grad, threat.norm)
        z = _into_ball(cur + step, xs, threat)
        weight = 1.0 if k == 0 else momentum
        following = _into_ball(cur + weight * (z - cur) + (1 - weight) * (cur - a["prev"]),
                               xs, threat)
        a["prev"], a["cur"] = cur, following
    result = torch.where(_per_sample(fooled, out), out, best_x)
    return result, fooled, best


def apgd_restarts(
    gradient: LossGradientFn, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
    settings: APGDSettings, *, targets: torch.Tensor | None = None,
    criterion: Criterion | None = None, generator: torch.Generator | None = None,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """APGD with ``settings.restarts`` runs on the batch rows ``rows`` (default: all) of ``x``.

    Each run starts at a fresh random point (a whole batch of starts drawn from ``generator``
    per run) and covers only the rows no earlier run fooled. Per row: the first fooling
    example, else the highest-loss one; whether it fooled; that loss. Shapes follow ``rows``."""
    if threat.norm not in NORMS:
        raise ValueError(f"APGD steps in linf or l2, not {threat.norm}")
    if settings.loss not in LOSSES:
        raise ValueError(f"APGD loss is one of {LOSSES}, not {settings.loss!r}")
    if settings.iterations < 1 or settings.restarts < 1:
        raise ValueError("iterations and restarts must be >= 1")
    x, y = x.detach(), y.detach()
    criterion = Misclassification(y) if criterion is None else criterion
    if rows is None:
        rows = torch.arange(len(x), device=x.device)
    result = x[rows].clone()
    found = torch.zeros(len(rows), dtype=torch.bool, device=x.device)
    best = torch.full((len(rows),), -torch.inf, dtype=x.dtype, device=x.device)
    for _ in range(settings.restarts):
        start = sample_start(x, threat, generator) if settings.random_start else x
        part = torch.arange(len(rows), device=x.device)
        if settings.early_exit:
            part = part[~found]
            if len(part) == 0:
                break
        picked = rows[part]
        x_run, fooled, score = apgd_run(
            gradient, x[picked], y[picked], picked, threat, start[picked], settings,
            targets=None if targets is None else targets[picked], criterion=criterion[picked])
        fresh = ~found[part]
        take = fresh & (fooled | (score > best[part]))
        result[part[take]] = x_run[take]
        best[part[take]] = score[take]
        found[part] |= fresh & fooled
    return result, found, best


def apgd(
    gradient: LossGradientFn, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, *,
    iterations: int, restarts: int = 1, loss: str = "ce", targets: torch.Tensor | None = None,
    rho: float = 0.75, momentum: float = 0.75, random_start: bool = True,
    early_exit: bool = True, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD on the batch ``x`` (true labels ``y``) inside ``threat``; returns ``x_adv``.

    ``targets``: move each sample to its target (targeted loss; success = predicted target)."""
    settings = APGDSettings(iterations=iterations, restarts=restarts, loss=loss, rho=rho,
                            momentum=momentum, random_start=random_start, early_exit=early_exit)
    return apgd_restarts(gradient, x, y, threat, settings, targets=targets,
                         criterion=criterion_for(y, targets), generator=generator)[0]


def top_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the ``k`` highest-scoring classes other than ``y``, best first (N × k)."""
    others = logits.scatter(1, y.view(-1, 1), -torch.inf)
    return others.argsort(dim=1, descending=True)[:, : min(k, logits.shape[1] - 1)]


@dataclass(kw_only=True)
class APGDAttack(Attack):
    """The APGD plugins' shared body: a subclass sets ``name``, ``description`` and ``loss``.

    Fields: ``iterations`` (gradient queries per sample and restart, 100), ``restarts`` (1),
    ``rho`` (0.75, the checkpoint's share of loss increases), ``momentum`` (α, 0.75),
    ``random_start`` (True), ``early_exit`` (True).
    """

    access = "gradient"
    norms = NORMS
    targeted = True
    randomized = True
    loss: ClassVar[str] = "ce"

    iterations: int = 100
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    random_start: bool = True
    early_exit: bool = True

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1:
            raise ValueError("iterations and restarts must be >= 1")
        if not 0 < self.rho <= 1 or not 0 < self.momentum <= 1:
            raise ValueError("rho and momentum must be in (0, 1]")

    def settings(self) -> dict[str, Any]:
        return dict(iterations=self.iterations, restarts=self.restarts, rho=self.rho,
                    momentum=self.momentum, random_start=self.random_start,
                    early_exit=self.early_exit)

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        return apgd(oracle.gradient, x, y, threat, loss=self.loss, targets=ctx.targets,
                    generator=ctx.generator, **self.settings())


@dataclass(kw_only=True)
class APGDTargetedAttack(APGDAttack):
    """APGD-T: targeted DLR towards each of the ``target_classes`` highest-scoring wrong classes
    of the clean input in turn, each round on the samples no earlier round fooled (success =
    misclassified). With ``ctx.targets`` it runs one targeted round towards them instead."""

    loss: ClassVar[str] = "dlr"
    target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_classes < 1:
            raise ValueError("target_classes must be >= 1")

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        if ctx.targets is not None:
            return super().run(oracle, x, y, threat, ctx)
        with torch.no_grad():
            ranked = top_classes(oracle.logits(x).detach(), y, self.target_classes)
        result = x.clone()
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best = torch.full((len(x),), -torch.inf, dtype=x.dtype, device=x.device)
        for round_ in range(ranked.shape[1]):
            rows = torch.arange(len(x), device=x.device)
            if self.early_exit:
                rows = rows[~found]
                if len(rows) == 0:
                    break
            x_run, fooled, score = apgd_restarts(
                oracle.gradient, x, y, threat, APGDSettings(loss="dlr", **self.settings()),
                rows=rows, targets=ranked[:, round_], generator=ctx.generator)
            fresh = ~found[rows]
            take = fresh & (fooled | (score > best[rows]))
            result[rows[take]] = x_run[take]
            best[rows[take]] = score[take]
            found[rows] |= fresh & fooled
        return result
