"""One-pixel attack (Su, Vargas, Sakurai 2019): differential evolution over k pixels, L0.

The threat's ε is the number of pixels k (ε = 1: one pixel). A candidate is k triples
(row, column, value per channel); DE/rand/1 without crossover, as in the paper: each member's
trial is a + F·(b − c) for three other random members, positions wrapped onto the image,
values clipped to [0, 1], and it replaces its parent when its fitness is no worse. Fitness is
the true-class probability (untargeted) or one minus the target's probability (targeted). An
image stops as soon as any candidate fools the model (that candidate is returned), else the
fittest is returned.

Vectorised across images and population: one oracle query per candidate, charged to its own
image, and only for candidates that paint something new: a trial that repeats any candidate
already evaluated for its image (the attack remembers them all, keyed by what they paint:
positions and values, pixel by pixel) or another trial takes that one's fitness, and
one that changes no pixel is rejected.
This assumes a deterministic model, as DE's selection does. Every active image's trials go
together, image by image, in passes of at most ``max_rows`` candidates (by default about a
hundred per CPU thread, where small convolutional nets run fastest on batches that stay in
cache, and thousands on an accelerator), and an image fooled in one pass asks nothing more.
No Python loop over images or pixels.

Defaults are sized for a 2-core CPU: population 50 and 20 generations (the paper: 400 and 100),
so at most 50 × (20 + 1) = 1,050 queries per image; ``max_queries`` is that product. On
``seed-cnn`` (158 correctly classified Fashion-MNIST test images) they fooled 12, where population
100 × 30 generations fooled 14 — as many as the exhaustive white/black pixel scan — for three
times the queries. Initial pixel values are drawn from {0, 1} (the extremes, which fool most
often in the exhaustive ``pixel-scan``); mutation then explores the values between.

Arguments: ``population``, ``iterations`` (generations after the initial one), ``mutation``
(F, 0.5 in the paper), ``max_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl
from advbench.algorithms.pixel_scan import rows_per_pass
from advbench.attack import Criterion


@dataclass(kw_only=True)
class OnePixel(Attack):
    name = "one-pixel"
    norms = ("l0",)
    access = "scores"
    targeted = True
    randomized = True
    description = "one-pixel attack (Su et al. 2019): differential evolution over k pixels"

    population: int = field(default=50, metadata={"ge": 4})
    iterations: int = field(default=20, metadata={"ge": 0})
    mutation: float = field(default=0.5, metadata={"gt": 0, "le": 2})
    max_rows: int | None = field(default=None, metadata={"ge": 1})

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
        criterion = ctx.criterion(y)
        size = self.population
        gen = ctx.generator
        scale = torch.tensor([h, w] + [1] * c, dtype=x.dtype, device=x.device)
        genes = torch.rand(n, size, k, 2 + c, generator=gen, device=x.device) * scale
        genes[..., 2:] = genes[..., 2:].round()
        fitness = torch.full((n, size), torch.inf, device=x.device)
        winner = torch.full((n,), -1, dtype=torch.long, device=x.device)  # fooling member
        seen = _Evaluated(1 + k * (1 + c), x.device, fitness.dtype)
        for generation in range(self.iterations + 1):
            active = torch.nonzero((winner < 0) & (oracle.queries + size <= limit)).flatten()
            if active.numel() == 0:
                break
            parents = genes[active]
            trial = parents if generation == 0 else self._mutate(parents, h, w, gen)
            trial_fitness, fooled = self._evaluate(oracle, x, criterion, active, trial, seen)
            keep = trial_fitness <= fitness[active]
            genes[active] = torch.where(keep[:, :, None, None], trial, parents)
            fitness[active] = torch.where(keep, trial_fitness, fitness[active])
            # A fooling trial may still be less fit than its parent: store it explicitly.
            success = fooled.any(dim=1)
            first = fooled.int().argmax(dim=1)
            won = active[success]
            genes[won, first[success]] = trial[success, first[success]]
            winner[won] = first[success]
            if won.numel() > 0:
                seen.forget(winner >= 0)
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

    def _evaluate(self, oracle: Oracle, x: torch.Tensor, criterion: Criterion,
                  active: torch.Tensor, trial: torch.Tensor, seen: _Evaluated
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness (lower is better) and success of every trial, both (images × members).

        Only new trials are queried, once: one that paints, pixel for pixel, what an earlier
        candidate of its image painted takes that candidate's fitness from ``seen`` (which
        never holds a fooling one: a fooled image has stopped), one that changes no pixel is
        rejected (fitness +inf), and trials that paint the same image share one query. Queries
        go image by image, in member order (a model runs faster on a batch of near-identical
        images: measured on the seed CNN on a CPU, ~20 % faster per row than on a batch
        mixing images — its max-pooling branches predict better), and an image fooled in one
        pass asks nothing in the next: its trials not yet asked are rejected, and its first
        fooling trial is found all the same (every earlier trial was asked by then).
        """
        n_active, size = trial.shape[:2]
        flat = trial.flatten(0, 1)
        owner = active.repeat_interleave(size)
        keys = _candidate_keys(owner, flat, x)
        known, known_fitness = seen.lookup(keys)
        fitness = torch.where(known, known_fitness, torch.inf)
        fooled = torch.zeros(n_active * size, dtype=torch.bool, device=x.device)
        first_copy = _first_copies(keys)
        original = first_copy == torch.arange(first_copy.numel(), device=x.device)
        pending = torch.nonzero(original & ~known & ~_paints_nothing(x[owner], flat)).flatten()
        stopped = torch.zeros(n_active, dtype=torch.bool, device=x.device)
        asked = []
        max_rows = self.max_rows or rows_per_pass(x.device)
        while pending.numel() > 0:
            chunk = _pass_size(pending.numel(), max_rows)
            rows, pending = pending[:chunk], pending[chunk:]
            scores = oracle.scores(_paint(x[owner[rows]], flat[rows]), index=owner[rows])
            judge = criterion[owner[rows]]
            own = scores.gather(1, judge.labels[:, None]).squeeze(1)
            fitness[rows] = (1 - own if judge.targeted else own).to(fitness.dtype)
            fooled[rows] = judge.is_adversarial(scores)
            asked.append(rows)
            if bool(fooled[rows].any()):
                stopped[rows[fooled[rows]] // size] = True
                pending = pending[~stopped[pending // size]]
        if asked:
            rows = torch.cat(asked)
            seen.add(keys[rows], fitness[rows])
        return fitness[first_copy].view(n_active, size), fooled[first_copy].view(n_active, size)


class _Evaluated:
    """Every candidate queried so far, by exact key (image, positions, value bits), with its
    fitness: a trial that repeats one is answered from here. Lookups go through sorted 64-bit
    hashes of the keys; a hash match is confirmed on the whole key, so a collision can only
    cost a query, never give a wrong fitness."""

    def __init__(self, width: int, device: torch.device, dtype: torch.dtype) -> None:
        self.keys = torch.zeros(0, width, dtype=torch.long, device=device)
        self.fitness = torch.zeros(0, dtype=dtype, device=device)
        self._index()

    def _index(self) -> None:
        self.hashes, self.order = _hash(self.keys).sort()

    def add(self, keys: torch.Tensor, fitness: torch.Tensor) -> None:
        self.keys = torch.cat([self.keys, keys])
        self.fitness = torch.cat([self.fitness, fitness])
        self._index()

    def forget(self, stopped: torch.Tensor) -> None:
        """Drop the candidates of images that have stopped (``stopped``: bool per image)."""
        keep = ~stopped[self.keys[:, 0]]
        self.keys, self.fitness = self.keys[keep], self.fitness[keep]
        self._index()

    def lookup(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(found, fitness) per row of ``keys``; the fitness is meaningless where not found."""
        if self.hashes.numel() == 0:
            return (torch.zeros(keys.shape[0], dtype=torch.bool, device=keys.device),
                    torch.zeros(keys.shape[0], dtype=self.fitness.dtype, device=keys.device))
        hashes = _hash(keys)
        slot = torch.searchsorted(self.hashes, hashes).clamp(max=self.hashes.numel() - 1)
        match = self.order[slot]
        found = (self.hashes[slot] == hashes) & (self.keys[match] == keys).all(dim=1)
        return found, self.fitness[match]


_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _candidate_keys(owner: torch.Tensor, genes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(m × (1 + k + k·C)) int64: exactly what a candidate paints — its image, each pixel's
    flat position (as :func:`_paint` computes it) and the bits of each value as painted."""
    h, w = x.shape[2:]
    rows = genes[..., 0].long().clamp(0, h - 1)
    cols = genes[..., 1].long().clamp(0, w - 1)
    values = genes[..., 2:].to(x.dtype).flatten(1).contiguous()
    bits = values.view(_SAME_SIZE_INT[values.element_size()]).long()
    return torch.cat([owner[:, None], rows * w + cols, bits], dim=1)


def _hash(keys: torch.Tensor) -> torch.Tensor:
    """A 64-bit hash per row of the int64 ``keys`` (multiply-xorshift, wrapping arithmetic)."""
    h = torch.zeros(keys.shape[0], dtype=torch.long, device=keys.device)
    for column in keys.unbind(dim=1):
        h = (h ^ column) * 0x5851F42D4C957F2D
        h = h ^ (h >> 29)
    return h


def _first_copies(keys: torch.Tensor) -> torch.Tensor:
    """For every row, the index of the first row with the same key (itself if none earlier)."""
    m = keys.shape[0]
    hashes, order = _hash(keys).sort(stable=True)
    starts = torch.ones(m, dtype=torch.bool, device=keys.device)
    starts[1:] = hashes[1:] != hashes[:-1]
    first = torch.empty_like(order)
    first[order] = order[starts][starts.long().cumsum(0) - 1]
    identical = (keys[first] == keys).all(dim=1)
    return torch.where(identical, first, torch.arange(m, device=keys.device))


def _pass_size(count: int, max_rows: int) -> int:
    """Rows for the next pass: ``count`` split evenly over as few passes of at most
    ``max_rows`` as will do (no small last pass, which would run slower per row)."""
    passes = -(-count // max_rows)
    return -(-count // passes)


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
