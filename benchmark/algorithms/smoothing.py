"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): the smoothed classifier, its
certificate, and certified accuracy against the L2 radius.

The smoothed classifier g(x) = argmax_c P(f(x + ε) = c), ε ~ N(0, σ²I), of a base classifier f
is certifiably robust in L2: if the top class has probability p_A ≥ ½ then g is constant on the
ball of radius σ·Φ⁻¹(p_A). The probabilities are estimated by Monte Carlo, so PREDICT may abstain
and CERTIFY uses a lower confidence bound p̲_A (one-sided Clopper–Pearson at level α), valid with
probability ≥ 1 − α per sample. With n samples p̲_A ≤ α^(1/n) (all n votes for the top class),
so no radius above σ·Φ⁻¹(α^(1/n)) can be certified (:func:`max_certifiable_radius`): for
α = 0.001 and n = 1000 that is 2.46σ (0.62 at σ = 0.25); n = 100 000 gives 3.81σ.

Noise is drawn from a generator owned by the module, seeded at construction and by
:meth:`SmoothedClassifier.reseed`, so a sequence of calls is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import beta, binom, norm
from torch import nn


def clopper_pearson_lower(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 − α) Clopper–Pearson lower bound of a binomial proportion (0 for none)."""
    successes = np.asarray(successes)
    safe = np.maximum(successes, 1)
    lower = beta.ppf(alpha, safe, trials - safe + 1)
    return np.where(successes > 0, lower, 0.0)


def binomial_p_value(top: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two-sided p-value of the test that ``top`` ~ Binomial(top + second, ½); ``top`` is
    the larger count, so it is twice the upper tail, capped at 1 (what scipy's binomtest
    gives for p = ½, vectorised)."""
    top, second = np.asarray(top), np.asarray(second)
    tail: np.ndarray = binom.sf(top - 1, top + second, 0.5)  # scipy is untyped
    return np.minimum(1.0, 2.0 * tail)


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """σ·Φ⁻¹(α^(1/n)): the radius certified when all n votes agree, the largest possible."""
    bound = alpha ** (1.0 / n)
    return float(sigma * norm.ppf(bound)) if bound > 0.5 else 0.0


class SmoothedClassifier(nn.Module):
    """The Gaussian-smoothed version of ``base``.

    ``forward`` is the *soft* smoothed classifier attacks differentiate: log of the mean softmax
    of ``base`` over ``m`` fresh noise draws (random: repeated calls differ). ``predict`` and
    ``certify`` are Cohen et al.'s PREDICT and CERTIFY; −1 is an abstention. ``batch`` bounds
    the rows (samples × draws) sent through ``base`` at once.
    """

    # The :class:`advbench.defense.Certifier` protocol: rows name the certificate so.
    certifier = "randomized-smoothing"
    certified_norm = "l2"

    def __init__(self, base: nn.Module, sigma: float, *, n0: int = 100, n: int = 1000,
                 alpha: float = 0.001, m: int = 8, batch: int = 4096, seed: int = 0) -> None:
        super().__init__()
        if sigma <= 0 or n0 < 1 or n < 1 or m < 1 or batch < 1 or not 0 < alpha < 1:
            raise ValueError("need sigma > 0, n0, n, m, batch >= 1 and 0 < alpha < 1")
        self.base = base
        self.sigma, self.n0, self.n, self.alpha, self.m, self.batch = sigma, n0, n, alpha, m, batch
        self.seed = seed
        self._generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        """Restart the noise stream from ``seed``."""
        self.seed, self._generator = seed, None

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def _noise(self, draws: int, x: torch.Tensor) -> torch.Tensor:
        """``draws`` noisy copies of every row of ``x``: shape (draws·N, …), draw-major."""
        generator = self._noise_generator(x.device)
        noise = torch.randn((draws, *x.shape), generator=generator, device=x.device,
                            dtype=x.dtype)
        return (x.unsqueeze(0) + self.sigma * noise).flatten(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log E[softmax(base(x + ε))] over ``m`` draws: differentiable, randomized."""
        draws_per_chunk = max(1, self.batch // max(len(x), 1))
        total = None
        for done in range(0, self.m, draws_per_chunk):
            draws = min(draws_per_chunk, self.m - done)
            probs: torch.Tensor = self.base(self._noise(draws, x)).softmax(dim=1)
            part = probs.view(draws, len(x), -1).sum(dim=0)
            total = part if total is None else total + part
        assert total is not None
        return (total / self.m).clamp_min(torch.finfo(total.dtype).tiny).log()

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int) -> torch.Tensor:
        """Votes of ``base`` over ``num`` noisy copies of each row: (N, classes) int64."""
        counts: torch.Tensor | None = None
        rows = min(len(x), self.batch)
        for first in range(0, len(x), rows):
            chunk = x[first : first + rows]
            part: torch.Tensor | None = None
            draws_per_chunk = max(1, self.batch // len(chunk))
            for done in range(0, num, draws_per_chunk):
                draws = min(draws_per_chunk, num - done)
                logits = self.base(self._noise(draws, chunk))
                if part is None:
                    part = torch.zeros(len(chunk), logits.shape[1], dtype=torch.long,
                                       device=x.device)
                labels = logits.argmax(dim=1).view(draws, len(chunk))
                part.scatter_add_(1, labels.T, torch.ones_like(labels.T))
            assert part is not None
            counts = part if counts is None else torch.cat([counts, part])
        assert counts is not None
        return counts

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """PREDICT: the top class of ``n`` votes, or −1 when the binomial test of the top two
        counts cannot reject a tie at level α."""
        counts = self.sample_counts(x, self.n)
        top2 = counts.topk(2, dim=1)
        top_counts = top2.values.cpu().numpy()
        p_value = binomial_p_value(top_counts[:, 0], top_counts[:, 1])
        abstain = torch.as_tensor(p_value > self.alpha, device=x.device)
        return torch.where(abstain, torch.full_like(top2.indices[:, 0], -1), top2.indices[:, 0])

    @torch.no_grad()
    def certify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY: pick ĉ from ``n0`` votes, count it among ``n`` fresh votes, lower-bound
        p_A; returns (labels, L2 radii), label −1 and radius 0 where p̲_A < ½."""
        guess = self.sample_counts(x, self.n0).argmax(dim=1)
        counts = self.sample_counts(x, self.n)
        hits = counts.gather(1, guess.unsqueeze(1)).squeeze(1).cpu().numpy()
        lower = clopper_pearson_lower(hits, self.n, self.alpha)
        certified = lower >= 0.5
        radii = np.where(certified, self.sigma * norm.ppf(np.where(certified, lower, 0.5)), 0.0)
        labels = torch.where(torch.as_tensor(certified, device=x.device), guess,
                             torch.full_like(guess, -1))
        return labels, torch.as_tensor(radii, dtype=torch.float64, device=x.device)


def certified_accuracy(labels: torch.Tensor, radii: torch.Tensor, y: torch.Tensor,
                       radius_grid: Sequence[float]) -> torch.Tensor:
    """Per radius r of the grid: the fraction of samples certified correct at radius ≥ r
    (an abstention, label −1, is never correct)."""
    correct = (labels.cpu() == y.cpu()).unsqueeze(0)
    grid = torch.as_tensor(list(radius_grid), dtype=torch.float64).unsqueeze(1)
    reach = radii.cpu().to(torch.float64).unsqueeze(0) >= grid
    return (correct & reach).to(torch.float64).mean(dim=1)

