"""The certifier (IBP and CROWN bounds) and the certified-training defense.

Soundness is checked against points inside the ball found three ways (uniform samples, corners,
PGD); tightness against exact minima found by enumerating ReLU activation patterns (one LP each).
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from support.bounds import (
    NETS,
    TOL,
    net_and_batch,
    sampled_margins,
    true_margins,
)
from torch import nn

import advbench.algorithms.bounds as bounds
import advbench_plugins.certified_training as certified_training_plugin
import advbench_plugins.ibp_cnn as ibp_cnn_plugin
from advbench import load_registry
from advbench.algorithms.bounds import (
    METHODS,
    input_box,
    interval_bounds,
    margin_lower_bounds,
)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These ops are small: on a loaded 2-core machine one thread is many times faster than two
    (two spin on each other). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(NETS))
def test_interval_bounds_contain_outputs(name: str) -> None:
    model, x, _, eps = net_and_batch(name)
    lower, upper = interval_bounds(model, *input_box(x, eps))
    points = torch.cat([x, *(input_box(x, eps)), (x + eps * (2 * torch.rand_like(x) - 1))
                        .clamp(0, 1)])
    out = model(points).view(4, *lower.shape)
    assert (lower <= out + TOL).all() and (out <= upper + TOL).all()


@pytest.mark.parametrize("name", list(NETS))
def test_crown_never_looser_than_ibp(name: str) -> None:
    model, x, y, eps = net_and_batch(name)
    ibp = margin_lower_bounds(model, x, y, eps, "ibp")
    crown_ibp = margin_lower_bounds(model, x, y, eps, "crown-ibp")
    crown = margin_lower_bounds(model, x, y, eps, "crown")
    assert (crown_ibp >= ibp - TOL).all()
    assert (crown >= crown_ibp - TOL).all()
    assert (crown - ibp).sum() > 0  # and it is tighter somewhere


def test_full_crown_tightens_intermediate_bounds_of_a_deep_mlp() -> None:
    model, x, y, eps = net_and_batch("mlp")
    gap = margin_lower_bounds(model, x, y, eps, "crown") - margin_lower_bounds(
        model, x, y, eps, "crown-ibp")
    assert gap.max() > 1e-6


def test_neuron_row_shortcut_matches_one_hot_back_substitution(monkeypatch) -> None:
    """Full CROWN reads a neuron's row of a conv or linear layer directly; it must equal
    back-substituting the one-hot row through the layer."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.ReLU(),
                          nn.Conv2d(4, 4, 2, stride=2, padding="valid", bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.rand(4, 2, 9, 9, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    fast = margin_lower_bounds(model, x, y, 0.1, "crown")
    monkeypatch.setattr(bounds, "_neuron_rows", lambda *args: None)
    slow = margin_lower_bounds(model, x, y, 0.1, "crown")
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10)
    assert (fast > margin_lower_bounds(model, x, y, 0.1, "crown-ibp") + 1e-9).any()


# ----------------------------------------------------------------------- exact, by enumeration


def two_layer(seed: int, inputs: int = 3, hidden: int = 5, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes)).double()


def exact_margin_minimum(model: nn.Sequential, x: np.ndarray, label: int, other: int,
                         eps: float) -> float:
    """min over the box of logit_label − logit_other: one LP per ReLU activation pattern."""
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    c = w2[label] - w2[other]
    box = list(zip(np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1), strict=True))
    best = np.inf
    for pattern in itertools.product((0.0, 1.0), repeat=len(b1)):
        on = np.array(pattern)
        sign = np.where(on > 0, -1.0, 1.0)  # active: W1x + b1 ≥ 0; inactive: ≤ 0
        objective = (c * on) @ w1
        constant = (c * on) @ b1 + b2[label] - b2[other]
        result = linprog(objective, A_ub=sign[:, None] * w1, b_ub=-sign * b1, bounds=box,
                         method="highs")
        if result.status == 0:
            best = min(best, result.fun + constant)
    return float(best)


def exact_margins(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor,
                  eps: float) -> torch.Tensor:
    classes = model[2].out_features
    return torch.tensor([[0.0 if j == label else exact_margin_minimum(model, row, label, j, eps)
                          for j in range(classes)]
                         for row, label in zip(x.numpy(), y.tolist(), strict=True)],
                        dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_below_exact_minimum_of_two_layer_net(seed: int) -> None:
    model = two_layer(seed)
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    eps = 0.2
    exact = exact_margins(model, x, y, eps)
    assert (exact <= sampled_margins(model, x, y, eps) + 1e-9).all()  # the LPs are right
    ibp = margin_lower_bounds(model, x, y, eps, "ibp")
    crown = margin_lower_bounds(model, x, y, eps, "crown")
    assert (ibp <= exact + 1e-9).all() and (crown <= exact + 1e-9).all()
    assert (crown >= ibp - 1e-12).all()


@pytest.mark.parametrize("method", METHODS)
def test_bounds_exact_at_zero_radius(method: str) -> None:
    model = two_layer(3)
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    bound = margin_lower_bounds(model, x, y, 0.0, method)
    torch.testing.assert_close(bound, true_margins(model, x, y), rtol=0, atol=1e-12)


def test_crown_exact_when_every_relu_is_stable() -> None:
    model = two_layer(4)
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    eps = 0.01
    lower, upper = interval_bounds(model[:1], *input_box(x, eps))
    stable = (lower >= 0) | (upper <= 0)
    keep = stable.all(1)
    assert keep.sum() >= 3
    x, y = x[keep], y[keep]
    exact = exact_margins(model, x, y, eps)
    crown = margin_lower_bounds(model, x, y, eps, "crown-ibp")
    ibp = margin_lower_bounds(model, x, y, eps, "ibp")
    torch.testing.assert_close(crown, exact, rtol=0, atol=1e-7)
    assert (ibp <= exact + 1e-9).all() and (ibp < exact - 1e-9).any()  # IBP loses dependencies


def test_ibp_exact_for_a_linear_model() -> None:
    """One affine layer folded into the specification: IBP's bound is the exact minimum."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4)).double()
    x = torch.rand(6, 3, dtype=torch.float64)
    y = torch.arange(6) % 4
    eps = 0.3
    lower, upper = input_box(x, eps)
    weight, bias = model[0].weight.detach(), model[0].bias.detach()
    diff = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (batch, K, inputs)
    corner = torch.where(diff > 0, lower.unsqueeze(1), upper.unsqueeze(1))  # the minimiser
    exact = (diff * corner).sum(-1) + bias[y].unsqueeze(1) - bias.unsqueeze(0)
    for method in METHODS:
        torch.testing.assert_close(margin_lower_bounds(model, x, y, eps, method), exact)


# ----------------------------------------------------------------------- API


def test_plugins_register() -> None:
    registry = load_registry(extra=[certified_training_plugin, ibp_cnn_plugin], autoload=False)
    defense = registry.get("defense", "certified-training").cls()
    assert defense.config()["eps"] is None  # trains at the run's L∞ ε unless set
    model = registry.get("model", "ibp-cnn").cls().build((1, 28, 28), 10)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_inplace_relu_gives_the_same_bounds() -> None:
    model, x, y, eps = net_and_batch("mlp")
    inplace = copy.deepcopy(model)
    inplace[2], inplace[3][1] = nn.ReLU(inplace=True), nn.ReLU(inplace=True)
    for method in METHODS:
        torch.testing.assert_close(margin_lower_bounds(inplace, x, y, eps, method),
                                   margin_lower_bounds(model, x, y, eps, method))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_bounds_are_differentiable(method: str) -> None:
    model, x, y, eps = net_and_batch("cnn")
    margin_lower_bounds(model, x, y, eps, method).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# ----------------------------------------------------------------------- trained models
