"""Projected gradient descent (Madry et al. 2018): the iterative primitive attacks and
adversarial-training defenses share.

It needs only a *gradient function* ``gradient(x, y, index) -> (grad, logits)``: the gradient of
a per-sample-summed loss with respect to ``x`` and the logits at ``x``. ``Oracle.gradient`` has
that signature (so the harness counts every query); :func:`model_gradient` builds one from a
plain ``nn.Module`` for training, where no oracle exists.

Each returned example is the *first iterate that fools* the model (misclassified, or classified
as its target), else the last iterate. That rule is what makes early exit free: a fooled sample's
answer is fixed the moment it is fooled, so stopping its iterations (``early_exit=True``) changes
only the work done, never the output, and robust accuracy is the same as running every step.
(Exactly so when each row's logits do not depend on the rest of its batch — eval mode; only
floating-point noise from batch composition could differ, and the tests see none.)
Training wants the strongest final iterate instead: pass ``return_final=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from advbench.attack import Attack, AttackContext, Criterion, criterion_for
from advbench.oracle import LossFn, Oracle, cross_entropy_sum
from advbench.threat import ThreatModel, l2_normalize, project

GradientFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None],
                      tuple[torch.Tensor, torch.Tensor]]
LogitsFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]

STEP_NORMS = ("linf", "l2")


def model_gradient(model: nn.Module, loss: LossFn = cross_entropy_sum) -> GradientFn:
    """A gradient function for a plain model (``index`` is ignored: nothing counts queries).

    Only the input gradient is computed (``autograd.grad`` with respect to ``x``), so parameter
    ``.grad`` fields are left untouched; the model's train/eval mode is the caller's choice.
    """

    def gradient(
        x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            (grad,) = torch.autograd.grad(loss(logits, y), x)
        return grad, logits.detach()

    return gradient


def model_logits(model: nn.Module) -> LogitsFn:
    """A logits function for a plain model (forward only, no gradient)."""

    def logits(x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(x)
        return out

    return logits


def sample_start(
    x: torch.Tensor, threat: ThreatModel, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniform random point of the ε-ball around ``x``, clipped to the box [0, 1].

    L∞: each coordinate uniform in [−ε, ε]. L2: uniform in the ball — a Gaussian direction,
    normalised, times radius ε·u^(1/d) (the radius law of a uniform point in d dimensions).
    """
    if threat.norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = (2 * noise - 1) * threat.eps
    elif threat.norm == "l2":
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        radius = threat.eps * u.pow(1.0 / x[0].numel())
        delta = l2_normalize(direction) * _per_sample(radius, x)
    else:
        raise ValueError(f"PGD steps in linf or l2, not {threat.norm}")
    return (x + project(delta, threat)).clamp(0, 1)


def pgd_step(
    x_adv: torch.Tensor, direction: torch.Tensor, x: torch.Tensor, threat: ThreatModel,
    step_size: float,
) -> torch.Tensor:
    """One step of ``step_size`` along ``direction`` (its sign for L∞, its unit L2 direction
    for L2), projected onto the ε-ball around ``x`` and clipped to [0, 1]."""
    move = direction.sign() if threat.norm == "linf" else l2_normalize(direction)
    delta = project(x_adv + step_size * move - x, threat)
    return (x + delta).clamp(0, 1)


def objective(logits: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    """Per-sample value PGD maximises: the true class's loss, or minus the target's."""
    loss = nn.functional.cross_entropy(logits, criterion.labels, reduction="none")
    return criterion.sign * loss


def pgd(
    gradient: GradientFn,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    targets: torch.Tensor | None = None,
    restarts: int = 1,
    random_start: bool = True,
    early_exit: bool = True,
    return_final: bool = False,
    generator: torch.Generator | None = None,
    logits: LogitsFn | None = None,
) -> torch.Tensor:
    """PGD on the batch ``x`` (true labels ``y``) inside ``threat``; returns ``x_adv``.

    Args:
        gradient: ``(x, y, index) -> (grad, logits)``; ``index`` names the batch rows queried.
        steps: gradient steps per restart; ``step_size``: the absolute step α (not ×ε).
        targets: if given, descend the targets' cross-entropy; success = predicted target.
        restarts: independent runs; per sample the first run that succeeds is kept, else the
            one of highest objective. With ``restarts > 1`` each run ends with one forward
            pass at its last iterate: ``logits(x, index)`` if given, else ``gradient``.
        random_start: start uniformly in the ball. Each run draws a whole batch of starts from
            ``generator`` (one run reproduces the first run of several with the same seed).
        early_exit: stop iterating, and querying, the samples already fooled.
        return_final: return the last iterate of every sample (adversarial training) instead
            of the first fooling one; needs ``early_exit=False``.
    """
    if threat.norm not in STEP_NORMS:
        raise ValueError(f"PGD steps in linf or l2, not {threat.norm}")
    if return_final and early_exit:
        raise ValueError("return_final runs every sample to the end: pass early_exit=False")
    if steps < 0 or restarts < 1:
        raise ValueError("steps must be >= 0 and restarts >= 1")
    x, y = x.detach(), y.detach()
    criterion = criterion_for(y, None if targets is None else targets.detach())
    result = x.clone()
    found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best = torch.full((len(x),), -torch.inf, dtype=x.dtype, device=x.device)
    for _ in range(restarts):
        start = sample_start(x, threat, generator) if random_start else x
        rows = torch.arange(len(x), device=x.device)
        if early_exit:
            rows = rows[~found]
            if len(rows) == 0:
                break
        run = _Run(gradient, x[rows], criterion[rows], rows, threat, step_size)
        x_run, fooled = run.iterate(start[rows], steps, early_exit, return_final)
        if restarts == 1:
            return x_run
        score, fooled = run.evaluate(logits, x_run, fooled, return_final)
        take = score > best[rows]
        if not return_final:
            fresh = ~found[rows]
            take = fresh & (fooled | take)
            found[rows] |= fresh & fooled
        result[rows[take]] = x_run[take]
        best[rows[take]] = score[take]
    return result


class _Run:
    """One PGD run on a set of rows: the stepping loop and the final evaluation."""

    def __init__(
        self, gradient: GradientFn, x: torch.Tensor, criterion: Criterion, rows: torch.Tensor,
        threat: ThreatModel, step_size: float,
    ) -> None:
        self.gradient, self.x, self.criterion, self.rows = gradient, x, criterion, rows
        self.threat, self.step_size = threat, step_size

    def iterate(
        self, start: torch.Tensor, steps: int, early_exit: bool, return_final: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``steps`` times; return each row's first fooling iterate (else its last, or its
        last regardless with ``return_final``) and whether it fooled during the loop.

        With ``early_exit`` the working tensors shrink to the rows still unfooled, so the
        oracle is queried only on them (``index`` = their batch positions)."""
        out, fooled = start.clone(), torch.zeros(len(start), dtype=torch.bool,
                                                 device=start.device)
        pos = torch.arange(len(start), device=start.device)
        cur, x, criterion, index = start, self.x, self.criterion, self.rows
        for _ in range(steps):
            grad, logits = self.gradient(cur, criterion.labels, index)
            if not return_final:
                hit = criterion.is_adversarial(logits)
                if early_exit:
                    if bool(hit.any()):
                        out[pos[hit]], fooled[pos[hit]] = cur[hit], True
                        keep = ~hit
                        cur, x, index, pos, grad = (t[keep] for t in (cur, x, index, pos, grad))
                        criterion = criterion[keep]
                        if len(pos) == 0:
                            return out, fooled
                else:
                    new = hit & ~fooled
                    out = torch.where(_per_sample(new, out), cur, out)
                    fooled |= new
            cur = pgd_step(cur, criterion.sign * grad, x, self.threat, self.step_size)
        if return_final:
            return cur, fooled
        if early_exit:
            out[pos] = cur
            return out, fooled
        return torch.where(_per_sample(fooled, out), out, cur), fooled

    def evaluate(
        self, logits_fn: LogitsFn | None, x_run: torch.Tensor, fooled: torch.Tensor,
        return_final: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective and success at each row's result, querying only rows not already known
        to be fooled (all rows with ``return_final``, which ranks runs by objective)."""
        ask = torch.ones_like(fooled) if return_final else ~fooled
        score = torch.full(fooled.shape, torch.inf, dtype=x_run.dtype, device=x_run.device)
        if bool(ask.any()):
            x_ask, criterion, index = x_run[ask], self.criterion[ask], self.rows[ask]
            if logits_fn is not None:
                with torch.no_grad():
                    logits = logits_fn(x_ask, index)
            else:
                logits = self.gradient(x_ask, criterion.labels, index)[1]
            score[ask] = objective(logits, criterion)
            fooled = fooled.clone()
            fooled[ask] |= criterion.is_adversarial(logits)
        return score, fooled


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` (one per sample) shaped to broadcast against ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


@dataclass(kw_only=True)
class PGDAttack(Attack):
    """The PGD attack plugins' shared body: a subclass sets ``name``, ``norms``, ``description``.

    Fields: ``steps``; ``rel_step_size`` α/ε (default 2.5/steps, Madry's rule steps·α = 2.5ε);
    ``restarts`` (per sample the first that fools is kept); ``random_start``; ``early_exit``.
    """

    access = "gradient"
    targeted = True
    randomized = True

    steps: int = field(default=20, metadata={"ge": 0})
    rel_step_size: float | None = field(default=None, metadata={"gt": 0})
    restarts: int = field(default=1, metadata={"ge": 1})
    random_start: bool = True
    early_exit: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0 or self.restarts < 1:
            raise ValueError("steps must be >= 0 and restarts >= 1")
        if self.steps == 0 and not self.random_start:  # it would return the clean images
            raise ValueError("steps=0 with random_start=false does not attack at all; give "
                             "steps >= 1, or random_start=true for a random point of the ball")
        if self.rel_step_size is None:
            self.rel_step_size = 2.5 / max(self.steps, 1)
        if self.rel_step_size <= 0:
            raise ValueError("rel_step_size must be > 0")

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        assert self.rel_step_size is not None  # __post_init__ fills it in
        return pgd(oracle.gradient, x, y, threat, steps=self.steps,
                   step_size=float(self.rel_step_size) * threat.eps, targets=ctx.targets,
                   restarts=self.restarts, random_start=self.random_start,
                   early_exit=self.early_exit, generator=ctx.generator, logits=oracle.logits)
