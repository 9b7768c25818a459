"""Defenses of issue 5: adversarial training (FGSM, PGD) and Gaussian randomized smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from advbench.algorithms.smoothing import (
    SmoothedClassifier,
    certified_accuracy,
    max_certifiable_radius,
)
from advbench.reporting.figures import plot_certified_accuracy
from advbench_plugins.adv_train_pgd import AdvTrainPGD
from advbench_plugins.gaussian_smoothing import GaussianSmoothing

PNG = b"\x89PNG\r\n\x1a\n"


# --- adversarial training -------------------------------------------------------------------


def test_history_is_not_configuration():
    defense = AdvTrainPGD(steps=4)
    assert "history" not in defense.config() and "context" not in defense.config()
    assert defense.rel_step_size == pytest.approx(2.5 / 4)


# --- randomized smoothing -------------------------------------------------------------------

def linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


THREE_CLASSES = linear([[1.0, 0.0], [-0.5, 0.8], [-0.5, -0.8]], [0.0, 0.1, -0.1])
POINTS = torch.linspace(-1.5, 1.5, 120).unsqueeze(1) * torch.tensor([[1.0, 0.3]])


def independent_certificate(c0: torch.Tensor, c: torch.Tensor, n: int, alpha: float,
                            sigma: float) -> tuple[list[int], list[float]]:
    labels, radii = [], []
    for guess, counts in zip(c0.argmax(dim=1).tolist(), c.tolist(), strict=True):
        k = counts[guess]
        lower = beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
        labels.append(guess if lower >= 0.5 else -1)
        radii.append(sigma * norm.ppf(lower) if lower >= 0.5 else 0.0)
    return labels, radii


def test_certify_matches_clopper_pearson_from_the_counts():
    smoothed = SmoothedClassifier(THREE_CLASSES, 0.5, n0=20, n=200, alpha=0.01, batch=1000)
    smoothed.reseed(7)
    c0, c = smoothed.sample_counts(POINTS, 20), smoothed.sample_counts(POINTS, 200)
    assert torch.equal(c.sum(dim=1), torch.full((len(POINTS),), 200))
    smoothed.reseed(7)
    labels, radii = smoothed.certify(POINTS)
    expected_labels, expected_radii = independent_certificate(c0, c, 200, 0.01, 0.5)
    assert labels.tolist() == expected_labels
    assert radii.tolist() == pytest.approx(expected_radii, rel=1e-12, abs=1e-12)
    assert -1 in expected_labels and max(expected_radii) > 0  # both cases exercised


def test_predict_matches_the_binomial_test_from_the_counts():
    smoothed = SmoothedClassifier(THREE_CLASSES, 0.5, n=100, alpha=0.01, batch=1000)
    smoothed.reseed(3)
    counts = smoothed.sample_counts(POINTS, 100)
    smoothed.reseed(3)
    predicted = smoothed.predict(POINTS).tolist()
    expected = []
    for row in counts.tolist():
        order = np.argsort(row)[::-1]
        top, second = row[order[0]], row[order[1]]
        expected.append(-1 if binomtest(top, top + second, 0.5).pvalue > 0.01 else order[0])
    assert predicted == expected and -1 in expected and max(expected) >= 0


def test_certified_radius_never_exceeds_the_n_sample_limit():
    sigma, n, alpha = 0.25, 300, 0.001
    limit = max_certifiable_radius(sigma, n, alpha)
    assert limit == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)))
    constant = linear([[0.0, 0.0], [0.0, 0.0]], [0.0, 5.0])  # always class 1: p̲A = α^(1/n)
    labels, radii = SmoothedClassifier(constant, sigma, n0=10, n=n, alpha=alpha).certify(POINTS)
    assert labels.eq(1).all()
    assert radii.tolist() == pytest.approx([limit] * len(POINTS), rel=1e-12)
    _, radii = SmoothedClassifier(THREE_CLASSES, sigma, n0=10, n=n, alpha=alpha).certify(POINTS)
    assert float(radii.max()) <= limit + 1e-12


def test_certified_radius_is_sound_for_a_linear_binary_base():
    """For f(x) = [w·x + b > 0] the smoothed classifier's exact robust radius is the distance
    |w·x + b| / ‖w‖ to the boundary; a certificate must never exceed it (w.p. ≥ 1 − α each)."""
    base = linear([[0.6, -0.8], [0.0, 0.0]], [0.1, 0.0])
    smoothed = SmoothedClassifier(base, 0.5, n0=50, n=2000, alpha=0.001, seed=11)
    labels, radii = smoothed.certify(POINTS)
    distance = (POINTS @ torch.tensor([0.6, -0.8]) + 0.1).abs().to(torch.float64)
    assert bool((radii <= distance).all()) and float(radii.max()) > 0.3
    truth = (POINTS @ torch.tensor([0.6, -0.8]) + 0.1 <= 0).long()  # class 1 wins ties at 0
    assert bool((labels[labels >= 0] == truth[labels >= 0]).all())


def test_too_few_samples_abstain():
    constant = linear([[0.0, 0.0], [0.0, 0.0]], [0.0, 5.0])
    smoothed = SmoothedClassifier(constant, 0.25, n0=5, n=5, alpha=0.001)
    assert smoothed.predict(POINTS).eq(-1).all()  # p-value 2·2⁻⁵ > α even at 5 votes to 0
    labels, radii = smoothed.certify(POINTS)  # α^(1/5) = 0.25 < ½
    assert labels.eq(-1).all() and radii.eq(0).all()


def test_predict_is_reproducible_with_its_seed():
    smoothed = GaussianSmoothing(sigma=0.5, n=50, alpha=0.05, seed=1).wrap(THREE_CLASSES)
    first = smoothed.predict(POINTS)
    smoothed.reseed(1)
    assert torch.equal(smoothed.predict(POINTS), first)
    smoothed.reseed(2)
    assert not torch.equal(smoothed.predict(POINTS), first)


def test_certified_accuracy_per_radius():
    labels = torch.tensor([0, 1, -1, 2, 1])
    radii = torch.tensor([0.6, 0.3, 0.0, 0.25, 0.9], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1, 1])
    result = certified_accuracy(labels, radii, y, [0.0, 0.25, 0.5, 1.0])
    assert result.tolist() == [0.6, 0.6, 0.4, 0.0]


def test_certified_accuracy_plot_is_written(tmp_path):
    path = plot_certified_accuracy([0.0, 0.25, 0.5], {"σ=0.25": [0.7, 0.5, 0.2]},
                                   tmp_path / "certified.png")
    assert path.read_bytes().startswith(PNG)
