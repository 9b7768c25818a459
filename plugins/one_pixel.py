"""One-pixel attack (Su, Vargas, Sakurai 2019): differential evolution over k pixels, L0.

The threat's ε is the number of pixels k (ε = 1: one pixel). A candidate is k triples
(row, column, value per channel); DE/rand/1 without crossover, as in the paper: each member's
trial is a + F·(b − c) for three other random members, positions wrapped onto the image,
values clipped to [0, 1], and it replaces its parent when its fitness is no worse. Fitness is
the true-class probability (untargeted) or one minus the target's probability (targeted). An
image stops as soon as any candidate fools the model (that candidate is returned), else the
fittest is returned.

Vectorised across images and population: one oracle query per candidate, charged to its own
image (a trial that repeats an evaluated member or another trial, or changes no pixel, is not
asked again), with every active image's whole population evaluated together (split into passes
of at most ``max_rows`` candidates, by default a few hundred on a CPU, where small convolutional
nets run fastest on batches that stay in cache, and thousands on an accelerator). No Python loop
over images or pixels.

Defaults are sized for a 2-core CPU: population 50 and 20 generations (the paper: 400 and 100),
so at most 50 × (20 + 1) = 1,050 queries per image; ``max_queries`` is that product. On the
seed CNN (158 correctly classified Fashion-MNIST test images) they fooled 12, where population
100 × 30 generations fooled 14 — as many as the exhaustive white/black pixel scan — for three
times the queries. Initial pixel values are
drawn from {0, 1} (the extremes, which fool most often in the seed's scan); mutation then
explores the values between.

Arguments: ``population``, ``iterations`` (generations after the initial one), ``mutation``
(F, 0.5 in the paper), ``max_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.pixel_scan import rows_per_pass


@dataclass(kw_only=True)
class OnePixel(Attack):
    name = "one-pixel"
    norms = ("l0",)
    access = "scores"
    targeted = True
    randomized = True
    description = "one-pixel attack (Su et al. 2019): differential evolution over k pixels"

    population: int = 50
    iterations: int = 20
    mutation: float = 0.5
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if self.population < 4:
            raise ValueError("differential evolution needs a population of at least 4")
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")

    @property
    def max_queries(self) -> int:
        """Per-image budget: the initial population and one trial population a generation."""
        return self.population * (self.iterations + 1)

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        k = int(threat.eps + 1e-9)
        n, c, h, w = x.shape
        limit = self.max_queries
        if oracle.max_queries is not None:
            limit = min(limit, oracle.max_queries)
        if k < 1 or n == 0:
            return x
        labels = y if ctx.targets is None else ctx.targets
        targeted = ctx.targets is not None
        size = self.population
        gen = ctx.generator
        scale = torch.tensor([h, w] + [1] * c, dtype=x.dtype, device=x.device)
        genes = torch.rand(n, size, k, 2 + c, generator=gen, device=x.device) * scale
        genes[..., 2:] = genes[..., 2:].round()
        fitness = torch.full((n, size), torch.inf, device=x.device)
        winner = torch.full((n,), -1, dtype=torch.long, device=x.device)  # fooling member
        for generation in range(self.iterations + 1):
            active = torch.nonzero((winner < 0) & (oracle.queries + size <= limit)).flatten()
            if active.numel() == 0:
                break
            parents = genes[active]
            trial = parents if generation == 0 else self._mutate(parents, h, w, gen)
            trial_fitness, fooled = self._evaluate(oracle, x, labels, active, trial,
                                                   parents, fitness[active], targeted)
            keep = trial_fitness <= fitness[active]
            genes[active] = torch.where(keep[:, :, None, None], trial, parents)
            fitness[active] = torch.where(keep, trial_fitness, fitness[active])
            # A fooling trial may still be less fit than its parent: store it explicitly.
            success = fooled.any(dim=1)
            first = fooled.int().argmax(dim=1)
            won = active[success]
            genes[won, first[success]] = trial[success, first[success]]
            winner[won] = first[success]
        chosen = torch.where(winner >= 0, winner, fitness.argmin(dim=1))
        return _paint(x, genes[torch.arange(n, device=x.device), chosen])

    def _mutate(self, genes: torch.Tensor, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        """DE/rand/1: a + F·(b − c) with a, b, c distinct members other than the parent."""
        n, size = genes.shape[:2]
        picks = _three_others(n, size, gen, genes.device)
        a, b, c = (genes.gather(1, p[:, :, None, None].expand_as(genes)) for p in picks)
        trial = a + self.mutation * (b - c)
        rows = trial[..., 0].remainder(h)
        cols = trial[..., 1].remainder(w)
        return torch.cat([rows[..., None], cols[..., None], trial[..., 2:].clamp(0, 1)], dim=-1)

    def _evaluate(self, oracle: Oracle, x: torch.Tensor, labels: torch.Tensor,
                  active: torch.Tensor, trial: torch.Tensor, members: torch.Tensor,
                  member_fitness: torch.Tensor, targeted: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness (lower is better) and success of every trial, both (images × members).

        Only trials that paint a new image are queried, once: one that paints exactly what an
        evaluated member paints takes that member's fitness (members are never fooling: a
        fooled image has stopped), one that changes no pixel is rejected (fitness +inf), and
        trials that paint the same image share one query.
        """
        n_active, size = trial.shape[:2]
        owner = active.repeat_interleave(size)
        unchanged = _paints_nothing(x[owner], trial.flatten(0, 1)).view(n_active, size)
        # (images × trials × members); members not yet evaluated (fitness +inf) don't count
        same = _same_pixels(trial, members) & member_fitness.isfinite()[:, None, :]
        known = same.any(dim=2)
        fitness = torch.where(
            known, torch.where(same, member_fitness[:, None, :], torch.inf).amin(dim=2),
            torch.inf)
        fooled = torch.zeros(n_active, size, dtype=torch.bool, device=x.device)
        first_copy = _same_pixels(trial, trial).int().argmax(dim=2)  # earliest identical trial
        original = first_copy == torch.arange(size, device=x.device)
        ask = torch.nonzero((original & ~known & ~unchanged).flatten()).flatten()
        flat_fitness, flat_fooled = fitness.view(-1), fooled.view(-1)
        max_rows = self.max_rows or rows_per_pass(x.device)
        for start in range(0, ask.numel(), max_rows):
            rows = ask[start : start + max_rows]
            candidates = _paint(x[owner[rows]], trial.flatten(0, 1)[rows])
            scores = oracle.scores(candidates, index=owner[rows])
            label = labels[owner[rows]]
            own = scores.gather(1, label[:, None]).squeeze(1)
            pred = scores.argmax(dim=1)
            flat_fitness[rows] = (1 - own if targeted else own).to(fitness.dtype)
            flat_fooled[rows] = pred == label if targeted else pred != label
        return fitness.gather(1, first_copy), fooled.gather(1, first_copy)


def _pixel_keys(genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What a candidate paints: integer (row, col) per pixel and the values per channel."""
    return genes[..., :2].floor(), genes[..., 2:]


def _same_pixels(trial: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(images × trials × members) bool: the trial paints the same pixels with the same values
    as the member (in the same order)."""
    t_pos, t_val = _pixel_keys(trial)
    m_pos, m_val = _pixel_keys(members)
    same_pos = (t_pos[:, :, None] == m_pos[:, None, :]).flatten(3).all(dim=3)
    same_val = (t_val[:, :, None] == m_val[:, None, :]).flatten(3).all(dim=3)
    return same_pos & same_val


def _paints_nothing(x: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """(m,) bool: every pixel of the candidate already has the values it would paint."""
    m, c, h, w = x.shape
    rows = genes[..., 0].long().clamp(0, h - 1)
    cols = genes[..., 1].long().clamp(0, w - 1)
    position = (rows * w + cols)[:, None, :].expand(m, c, -1)
    current = x.flatten(2).gather(2, position)
    return (current == genes[..., 2:].transpose(1, 2).to(x.dtype)).flatten(1).all(dim=1)


def _three_others(n: int, size: int, gen: torch.Generator, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every (image, member i): three distinct members, all ≠ i, uniformly at random.

    Draw from shrinking ranges and shift past the values already taken (in increasing order),
    which maps each draw uniformly onto the members still free.
    """
    shape = (n, size)
    own = torch.arange(size, device=device).expand(shape)
    first = torch.randint(0, size - 1, shape, generator=gen, device=device)
    second = torch.randint(0, size - 2, shape, generator=gen, device=device)
    third = torch.randint(0, size - 3, shape, generator=gen, device=device)
    second = second + (second >= first).long()
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    third = third + (third >= low).long()
    third = third + (third >= high).long()
    # Now three distinct values in [0, size - 1); skip over the parent's own index.
    return tuple(p + (p >= own).long() for p in (first, second, third))  # type: ignore[return-value]


def _paint(x: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """``x`` (m×C×H×W) with, per image, the k pixels of ``genes`` (m×k×(2+C)) painted in."""
    m, c, h, w = x.shape
    rows = genes[..., 0].long().clamp(0, h - 1)
    cols = genes[..., 1].long().clamp(0, w - 1)
    position = (rows * w + cols)[:, None, :].expand(m, c, -1)
    values = genes[..., 2:].transpose(1, 2).to(x.dtype)
    return x.flatten(2).scatter(2, position, values).view(m, c, h, w)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [OnePixel]
