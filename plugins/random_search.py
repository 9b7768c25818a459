"""Random search, score-based: a greedy search with the proposals and schedule of the Square
Attack (Andriushchenko, Croce, Flammarion, Hein 2020), L∞ and L2.

The attack sees probabilities only. It minimises the margin of log-probabilities (equal to the
logit margin: log p_y − max_{j≠y} log p_j, or towards a target max_{j≠t} log p_j − log p_t) and
keeps a proposal only when it lowers that margin; an image stops (and stops spending queries)
as soon as it is misclassified (or classified as its target).

- L∞: start from vertical stripes of ±ε; each step resets one random square window to ±ε (a
  random sign per channel), flipping the sign when that would change nothing.
- L2: start from a grid of pseudo-Gaussian bumps of total norm ε; each step picks two windows,
  empties the second and puts its norm (plus any unused budget) into the first, whose content
  turns towards a random-sign bump (the paper's mass-moving update), then rescales δ to norm ε
  so the norm lost to clipping at the box is spent again. The result is projected onto the
  ball and clipped to [0, 1] regardless.

The window covers a fraction p of the image, p_init halved at 10, 50, 200, 500, 1k, 2k, 4k, 6k
and 8k of 10k iterations, the schedule rescaled to the budget. One query per image at the start
and one per active image each step, so an image never spends more than ``max_queries``.

Arguments: ``max_queries`` (per-image budget, default 1000), ``p_init`` (None: 0.8 for L∞ as in
AutoAttack, 0.1 for L2).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.attack import Criterion
from advbench.threat import clip_to_box, project

SCHEDULE_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_LENGTH = 10_000
P_INIT = {"linf": 0.8, "l2": 0.1}


@dataclass(kw_only=True)
class RandomSearch(Attack):
    name = "random-search"
    norms = ("linf", "l2")
    access = "scores"
    targeted = True
    randomized = True
    description = "greedy score-based random search with Square-Attack windows (L∞, L2)"

    max_queries: int = field(default=1000, metadata={"ge": 1})
    p_init: float | None = field(default=None, metadata={"gt": 0, "le": 1})

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        limit = self.max_queries
        if oracle.max_queries is not None:
            limit = min(limit, oracle.max_queries)
        if threat.eps == 0 or x.shape[0] == 0 or bool((oracle.queries >= limit).all()):
            return x
        criterion = ctx.criterion(y)
        gen = ctx.generator
        p_init = self.p_init if self.p_init is not None else P_INIT[threat.norm]

        # Only images with budget left take part, from the very first query on.
        start = torch.nonzero(oracle.queries < limit).flatten()
        delta = torch.zeros_like(x)
        margin = torch.full((x.shape[0],), -torch.inf, device=x.device)
        delta[start] = clip_to_box(x[start] + _init(x[start], threat, gen)) - x[start]
        margin[start] = _margin(oracle.scores(x[start] + delta[start], start), criterion[start])
        n_iters = limit - 1
        for i in range(n_iters):
            active = torch.nonzero((margin >= 0) & (oracle.queries < limit)).flatten()
            if active.numel() == 0:
                break
            side = _window_side(_p_at(p_init, i, n_iters), x.shape, threat.norm)
            xa, da = x[active], delta[active]
            if threat.norm == "linf":
                proposal = _propose_linf(xa, da, side, threat.eps, gen)
            else:
                proposal = _propose_l2(xa, da, side, threat.eps, gen)
            x_new = clip_to_box(xa + proposal)
            new_margin = _margin(oracle.scores(x_new, active), criterion[active])
            better = new_margin < margin[active]
            delta[active[better]] = (x_new - xa)[better]
            margin[active[better]] = new_margin[better]
        return clip_to_box(x + delta)


def _margin(scores: torch.Tensor, criterion: Criterion) -> torch.Tensor:
    """Log-probability margin, < 0 exactly when the attack has succeeded on that row."""
    log_p = scores.clamp_min(torch.finfo(scores.dtype).tiny).log()
    labels = criterion.labels[:, None]
    own = log_p.gather(1, labels).squeeze(1)
    other = log_p.scatter(1, labels, -torch.inf).amax(dim=1)
    return criterion.sign * (own - other)


def _p_at(p_init: float, i: int, n_iters: int) -> float:
    """Window fraction at iteration ``i``: the paper's schedule rescaled to ``n_iters``."""
    scaled = int(i / max(n_iters, 1) * SCHEDULE_LENGTH)
    return p_init / 2.0 ** bisect.bisect_left(SCHEDULE_STEPS, scaled)


def _window_side(p: float, shape: torch.Size, norm: str) -> int:
    """Side of a square window holding a fraction ``p`` of the pixels (all channels). L2
    windows are odd and at least 3 wide, so their bump has a centre and two halves."""
    h, w = shape[-2:]
    side: int = round((p * h * w) ** 0.5)
    if norm == "l2":
        side = max(3, side + (side % 2 == 0))
    return max(1, min(side, min(h, w) - 1))


def _window_mask(n: int, h: int, w: int, side: int, gen: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N×1×H×W bool mask of one random side×side window per image, and each pixel's row and
    column relative to its window's corner (N×H×1 and N×1×W)."""
    top = torch.randint(0, h - side + 1, (n, 1), generator=gen, device=device)
    left = torch.randint(0, w - side + 1, (n, 1), generator=gen, device=device)
    rows = torch.arange(h, device=device) - top
    cols = torch.arange(w, device=device) - left
    inside_r = (rows >= 0) & (rows < side)
    inside_c = (cols >= 0) & (cols < side)
    mask = (inside_r[:, :, None] & inside_c[:, None, :]).unsqueeze(1)
    return mask, rows[:, :, None], cols[:, None, :]


def _random_signs(shape: tuple[int, ...], gen: torch.Generator, like: torch.Tensor
                  ) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=like.device).to(like.dtype) * 2 - 1


def _rectangle(a: int, b: int, device: torch.device) -> torch.Tensor:
    """a×b pseudo-Gaussian of unit norm: nested rectangles around the centre, the k-th
    weighted 1/(k+1)², summed (so Chebyshev ring d holds Σ_{k≥d} 1/(k+1)²)."""
    ring = torch.maximum((torch.arange(a, device=device) - a // 2).abs()[:, None],
                         (torch.arange(b, device=device) - b // 2).abs()[None, :])
    weights = 1.0 / torch.arange(1, max(a, b) + 2, device=device, dtype=torch.float32) ** 2
    profile = weights.flip(0).cumsum(0).flip(0)[ring]
    size: torch.Tensor = profile.norm()
    return profile / size


def _template(side: int, device: torch.device) -> torch.Tensor:
    """side×side unit-norm bump: the top half positive, the bottom half negative."""
    top = side // 2
    bump = torch.cat([_rectangle(top, side, device), -_rectangle(side - top, side, device)])
    size: torch.Tensor = bump.norm()
    return bump / size


def _place(template: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
           transpose: torch.Tensor) -> torch.Tensor:
    """N×1×H×W: ``template`` read at each pixel's window-relative (row, col), transposed where
    ``transpose`` (N×1×1) holds; the caller masks pixels outside the window."""
    side = template.shape[0]
    r, c = rows.clamp(0, side - 1), cols.clamp(0, side - 1)
    plain, turned = template[r, c], template.t()[r, c]
    return torch.where(transpose, turned, plain).unsqueeze(1)


def _init(x: torch.Tensor, threat: ThreatModel, gen: torch.Generator) -> torch.Tensor:
    """L∞: vertical stripes of ±ε. L2: a 5×5 grid of bumps (side H//5) of random sign per
    channel and tile, scaled to norm ε."""
    n, c, h, w = x.shape
    if threat.norm == "linf":
        return threat.eps * _random_signs((n, c, 1, w), gen, x).expand(n, c, h, w)
    side = max(1, min(h, w) // 5)
    rows = torch.arange(h, device=x.device) - (h - 5 * side) // 2
    cols = torch.arange(w, device=x.device) - (w - 5 * side) // 2
    inside = ((rows >= 0) & (rows < 5 * side))[:, None] & ((cols >= 0) & (cols < 5 * side))
    transpose = torch.rand(n, 1, 1, generator=gen, device=x.device) < 0.5
    bumps = _place(_template(side, x.device).to(x.dtype), (rows % side).view(1, h, 1),
                   (cols % side).view(1, 1, w), transpose)
    tile_r = rows.clamp(0, 5 * side - 1) // side
    tile_c = cols.clamp(0, 5 * side - 1) // side
    signs = _random_signs((n, c, 5, 5), gen, x)[:, :, tile_r][:, :, :, tile_c]
    delta = torch.where(inside, bumps * signs, 0.0)
    return _to_radius(delta, threat.eps)


def _to_radius(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Each sample rescaled to L2 norm ε (a hair inside, so float rounding never takes it past
    the gate's tolerance); zero samples stay zero."""
    norm: torch.Tensor = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return delta * (eps * (1 - 1e-5) / norm)


def _propose_linf(x: torch.Tensor, delta: torch.Tensor, side: int, eps: float,
                  gen: torch.Generator) -> torch.Tensor:
    """``delta`` with one random window set to ±ε per channel; where that would leave the
    clipped image unchanged, the opposite sign is used instead (no wasted query)."""
    n, c, h, w = x.shape
    mask, _, _ = _window_mask(n, h, w, side, gen, x.device)
    signs = _random_signs((n, c, 1, 1), gen, x)
    first = torch.where(mask, eps * signs, delta)
    current = clip_to_box(x + delta)
    unchanged = (clip_to_box(x + first) == current).flatten(1).all(dim=1)
    flipped = torch.where(mask, -eps * signs, delta)
    return torch.where(unchanged.view(-1, 1, 1, 1), flipped, first)


def _propose_l2(x: torch.Tensor, delta: torch.Tensor, side: int, eps: float,
                gen: torch.Generator) -> torch.Tensor:
    """Move the norm of window W2 (and the unused budget) into window W1: W1's content turns
    towards a random bump (its unit direction plus the unit bump, renormalised) and gets the
    norm² ‖δ on W1 ∪ W2‖² + ε² − ‖δ‖²; W2 outside W1 becomes zero. The whole δ is then
    rescaled to norm ε, so the norm lost to clipping at the box is spent again."""
    n, c, h, w = x.shape
    first, rows, cols = _window_mask(n, h, w, side, gen, x.device)
    second, _, _ = _window_mask(n, h, w, side, gen, x.device)
    transpose = torch.rand(n, 1, 1, generator=gen, device=x.device) < 0.5
    bump = torch.where(first, _place(_template(side, x.device).to(x.dtype), rows, cols,
                                     transpose), 0.0)
    bump = bump * _random_signs((n, c, 1, 1), gen, x)
    old = torch.where(first, delta, 0.0)
    budget = _norm(torch.where(first | second, delta, 0.0)) ** 2 \
        + (eps**2 - _norm(delta) ** 2).clamp_min(0)
    direction = old / _norm(old).clamp_min(1e-12).view(-1, 1, 1, 1) + bump
    window = direction * (budget.sqrt() / _norm(direction).clamp_min(1e-12)).view(-1, 1, 1, 1)
    proposal = torch.where(first, window, torch.where(second, 0.0, delta))
    return project(_to_radius(proposal, eps), ThreatModel("l2", eps))


def _norm(t: torch.Tensor) -> torch.Tensor:
    size: torch.Tensor = t.flatten(1).norm(dim=1)
    return size


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [RandomSearch]
