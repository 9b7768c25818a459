"""Black-box attacks (issue #4): random-search, one-pixel, pixel-scan, and the score oracle.

Most tests use tiny linear models on small images (milliseconds); one uses the session's
trained seed CNN on real Fashion-MNIST.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from helpers import Counting
from support.blackbox import brute_force_map, ctx, predictions, tiny_batch, tiny_model

from advbench import AccessError, Attack, Oracle, QueryBudgetExceeded, ThreatModel
from advbench.algorithms.pixel_scan import fooling_map, save_fooling_heatmap
from advbench.threat import perturbation_size
from advbench_plugins.one_pixel import OnePixel
from advbench_plugins.pixel_scan import PixelScan
from advbench_plugins.random_search import RandomSearch


@dataclass(kw_only=True)
class Cheater(Attack):
    """Declares score access, then asks for a gradient anyway."""

    name = "cheater"
    norms = ("linf",)
    access = "scores"

    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        return x + threat.eps * grad.sign()


# --- the oracle ------------------------------------------------------------------------------


def test_a_scores_attack_gets_no_gradient() -> None:
    model = tiny_model((1, 6, 6), 0)
    x, y = tiny_batch(model, 4, (1, 6, 6), 0)
    with pytest.raises(AccessError):
        Cheater().perturb(Oracle(model, "scores", 4), x, y, ThreatModel("linf", 0.1), ctx())
    for attack in (RandomSearch, OnePixel, PixelScan):
        assert attack.access == "scores"


# --- random-search ---------------------------------------------------------------------------


def test_random_search_obeys_a_tighter_oracle_budget() -> None:
    model = tiny_model((1, 8, 8), 1)
    x, y = tiny_batch(model, 20, (1, 8, 8), 1)
    oracle = Oracle(model, "scores", 20, max_queries=25)
    RandomSearch(max_queries=1000).perturb(oracle, x, y, ThreatModel("linf", 0.02), ctx())
    assert int(oracle.queries.max()) == 25
    with pytest.raises(QueryBudgetExceeded):  # the budget is real: one more would raise
        oracle.scores(x, torch.arange(20))


# --- one-pixel -------------------------------------------------------------------------------


@pytest.mark.parametrize("k, shape", [(1, (1, 8, 8)), (3, (3, 8, 8))])
def test_one_pixel_changes_at_most_k_pixels(k: int, shape: tuple[int, int, int]) -> None:
    model = Counting(tiny_model(shape, 5, scale=4.0))
    x, y = tiny_batch(model, 30, shape, 5)
    model.rows = 0
    attack = OnePixel(population=12, iterations=6)
    oracle = Oracle(model, "scores", 30, attack.max_queries)
    result = attack.perturb(oracle, x, y, ThreatModel("l0", k), ctx())
    assert result.x_adv is not None, result.reason
    changed = perturbation_size(result.x_adv - x, "l0")
    assert float(changed.max()) <= k
    assert int(oracle.queries.sum()) == model.rows
    assert int(oracle.queries.max()) <= attack.max_queries == 12 * 7
    fooled = predictions(model, result.x_adv) != y
    assert 0 < int(fooled.sum()) < 30


def test_one_pixel_success_rises_with_generations() -> None:
    """Same seed, more generations: the first generations are identical, so every image
    fooled with fewer generations is fooled with more."""
    model = tiny_model((1, 8, 8), 6, scale=3.0)
    x, y = tiny_batch(model, 60, (1, 8, 8), 6)
    fooled = []
    for iterations in (0, 3, 12):
        attack = OnePixel(population=10, iterations=iterations)
        result = attack.perturb(Oracle(model, "scores", 60, attack.max_queries), x, y,
                                ThreatModel("l0", 1), ctx(3))
        fooled.append(predictions(model, result.x_adv) != y)
    assert bool((fooled[0] <= fooled[1]).all()) and bool((fooled[1] <= fooled[2]).all())
    assert int(fooled[2].sum()) > int(fooled[0].sum())


def test_one_pixel_targeted() -> None:
    model = tiny_model((1, 8, 8), 7, scale=6.0)
    x, y = tiny_batch(model, 40, (1, 8, 8), 7)
    with torch.no_grad():
        targets = model(x).topk(2, dim=1).indices[:, 1]  # the runner-up class
    attack = OnePixel(population=16, iterations=10)
    result = attack.perturb(Oracle(model, "scores", 40, attack.max_queries), x, y,
                            ThreatModel("l0", 2), ctx(targets=targets))
    pred = predictions(model, result.x_adv)
    assert int((pred == targets).sum()) >= 10
    assert float(perturbation_size(result.x_adv - x, "l0").max()) <= 2


# --- pixel-scan ------------------------------------------------------------------------------


def test_pixel_scan_attack_returns_the_first_fooling_pixel() -> None:
    model = tiny_model((1, 6, 6), 9, scale=5.0)
    x, y = tiny_batch(model, 12, (1, 6, 6), 9)
    white, black = (brute_force_map(model, x, y, v).flatten(1) for v in (1.0, 0.0))
    oracle = Oracle(model, "scores", 12)
    result = PixelScan(block=5).perturb(oracle, x, y, ThreatModel("l0", 1), ctx())
    assert result.x_adv is not None, result.reason
    delta = (result.x_adv - x).flatten(1)
    for i in range(12):
        order = torch.cat([white[i], black[i]])
        if not bool(order.any()):
            assert bool((delta[i] == 0).all())
            assert int(oracle.queries[i]) == 72  # the whole scan, both values
            continue
        first = int(order.int().argmax())
        value, position = (1.0, first) if first < 36 else (0.0, first - 36)
        assert float(result.x_adv[i].flatten()[position]) == value
        assert int((delta[i] != 0).sum()) <= 1
        assert int(oracle.queries[i]) <= 72
    assert float(perturbation_size(result.x_adv - x, "l0").max()) <= 1


def test_heatmap_png(tmp_path) -> None:
    model = tiny_model((1, 6, 6), 8, scale=5.0)
    x, y = tiny_batch(model, 5, (1, 6, 6), 8)
    path = save_fooling_heatmap(tmp_path / "scan" / "heat.png", x, fooling_map(model, x, y),
                                max_images=3)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
