"""FGSM and FGM on linear models against the closed forms of the course seed.

Binary linear model h(x) = wᵀx + b, label s ∈ {−1, +1}, logistic loss L(s·h). The seed derives
δ* = −s·ε·sign(w) for the L∞ ball and max loss L(s·h − ε‖w‖₁); for the L2 ball the maximiser
is δ* = −s·ε·w/‖w‖₂ and the max loss L(s·h − ε‖w‖₂) (the dual norms).
"""

from __future__ import annotations

import torch
from torch import nn

from advbench import AttackContext, Oracle, Split, ThreatModel
from advbench.running.evaluate import CellSpec, attack_cell, predict
from advbench_plugins.fgm import FGM
from advbench_plugins.fgsm import FGSM

EPS_LINF, EPS_L2 = 0.05, 0.5


class BinaryLinear(nn.Module):
    """Logits (0, wᵀx + b): cross-entropy on them is exactly the logistic loss log(1+e^(−s·h))."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.score(x)
        return torch.stack([torch.zeros_like(h), h], dim=1)


def logistic(z: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(-z)


def binary_problem(n: int = 64, d: int = 49):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    model = BinaryLinear(w, 0.3)
    x = 0.3 + 0.4 * torch.rand(n, 1, 7, 7, generator=gen, dtype=torch.float64)  # no clipping
    y = torch.randint(0, 2, (n,), generator=gen)
    return model, x, y, (2 * y - 1).double()


def run(attack, model, x, y, threat):
    oracle = Oracle(model, attack.access, len(x))
    result = attack.perturb(oracle, x, y, threat, AttackContext(torch.Generator()))
    assert result.reason is None
    return result.x_adv


def test_fgsm_binary_linear_equals_closed_form():
    model, x, y, s = binary_problem()
    x_adv = run(FGSM(), model, x, y, ThreatModel("linf", EPS_LINF))
    expected = -s.view(-1, 1) * EPS_LINF * model.w.sign()
    assert torch.allclose((x_adv - x).flatten(1), expected, atol=1e-12)
    max_loss = logistic(s * model.score(x) - EPS_LINF * model.w.abs().sum())
    assert torch.allclose(logistic(s * model.score(x_adv)), max_loss, atol=1e-10)


def test_fgm_binary_linear_equals_closed_form():
    model, x, y, s = binary_problem()
    x_adv = run(FGM(), model, x, y, ThreatModel("l2", EPS_L2))
    expected = -s.view(-1, 1) * EPS_L2 * model.w / model.w.norm()
    assert torch.allclose((x_adv - x).flatten(1), expected, atol=1e-12)
    max_loss = logistic(s * model.score(x) - EPS_L2 * model.w.norm())
    assert torch.allclose(logistic(s * model.score(x_adv)), max_loss, atol=1e-10)


def test_harness_robustness_matches_the_closed_form_margin():
    """A sample survives FGSM exactly when s·h(x) − ε‖w‖₁ > 0: the harness must agree."""
    model, x, y, s = binary_problem(n=400)
    pred = predict(model, x, 100, torch.device("cpu"))
    outcome = attack_cell(model, FGSM(), Split(x, y), pred, ThreatModel("linf", EPS_LINF),
                          CellSpec(batch_size=100, device=torch.device("cpu"), seed=0))
    margin = s * model.score(x) - EPS_LINF * model.w.abs().sum()
    assert torch.equal(outcome.robust, margin > 0)
    assert 0 < int(outcome.robust.sum()) < int(outcome.clean_correct.sum())


def test_fgsm_multiclass_linear_softmax():
    """∇ₓ CE = Wᵀ(softmax(Wx + b) − e_y), so FGSM is x + ε·sign(Wᵀ(p − e_y))."""
    gen = torch.Generator().manual_seed(2)
    layer = nn.Linear(49, 10).double()
    model = nn.Sequential(nn.Flatten(), layer)
    x = 0.3 + 0.4 * torch.rand(32, 1, 7, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=gen)
    x_adv = run(FGSM(), model, x, y, ThreatModel("linf", EPS_LINF))
    with torch.no_grad():
        p = torch.softmax(layer(x.flatten(1)), dim=1)
        grad = (p - nn.functional.one_hot(y, 10).double()) @ layer.weight
    assert torch.allclose((x_adv - x).flatten(1), EPS_LINF * grad.sign(), atol=1e-12)


def test_targeted_fgsm_multiclass_linear_softmax():
    """Targeted: x − ε·sign(Wᵀ(softmax(Wx + b) − e_t)). The target is a middling class, neither
    the prediction nor the runner-up, so a step away from the label or towards the runner-up
    would differ; the target's log-probability rises."""
    gen = torch.Generator().manual_seed(3)
    layer = nn.Linear(49, 10).double()
    with torch.no_grad():
        layer.weight.copy_(0.3 * torch.randn(10, 49, generator=gen, dtype=torch.float64))
        layer.bias.zero_()
    model = nn.Sequential(nn.Flatten(), layer)
    x = 0.3 + 0.4 * torch.rand(32, 1, 7, 7, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        logits = layer(x.flatten(1))
    ranked = logits.argsort(dim=1, descending=True)
    y, runner_up, target = ranked[:, 0], ranked[:, 1], ranked[:, 5]
    oracle = Oracle(model, "gradient", len(x))
    ctx = AttackContext(torch.Generator(), targets=target)
    x_adv = FGSM().perturb(oracle, x, y, ThreatModel("linf", EPS_LINF), ctx).x_adv

    def step_towards(classes: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits, dim=1)
        return -EPS_LINF * ((p - nn.functional.one_hot(classes, 10).double()) @ layer.weight).sign()

    delta = (x_adv - x).flatten(1)
    assert torch.allclose(delta, step_towards(target), atol=1e-12)
    assert not torch.allclose(delta, step_towards(runner_up))
    untargeted = run(FGSM(), model, x, y, ThreatModel("linf", EPS_LINF))
    assert not torch.allclose(x_adv, untargeted)
    with torch.no_grad():
        before = torch.log_softmax(logits, dim=1).gather(1, target[:, None])
        after = torch.log_softmax(layer(x_adv.flatten(1)), dim=1).gather(1, target[:, None])
    assert bool((after > before).all())
