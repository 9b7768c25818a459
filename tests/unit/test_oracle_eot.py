"""What a query is against a randomized defense (issue #26 point 2): one request of the attack.

``oracle.logits`` is the mean of the logits over the run's ``eot_samples`` draws (differentiable,
so a loss of the attack's own gets the EOT gradient), ``oracle.gradient`` is the gradient of the
loss of that mean, and either call charges one query per row however many draws stand behind it:
a gradient attack with a budget of one query per step gets all its steps.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support.oracle_eot import DRAWS, STEPS, NoisyLogits, Stepwise

from advbench.conformance import tiny_images, tiny_model
from advbench.oracle import Oracle, QueryBudgetExceeded
from advbench.seal import Pristine, Seal


def margin_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A loss of the attack's own: the summed margin of the best other class over the label."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -torch.inf).max(dim=1).values
    return (other - own).sum()


@pytest.fixture
def noisy() -> tuple[NoisyLogits, torch.Tensor, torch.Tensor]:
    base = tiny_model()
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    x = tiny_images(6)
    return NoisyLogits(base).eval(), x, base(x).argmax(dim=1)


def test_logits_are_the_mean_of_the_draws_and_one_query(noisy):
    model, x, _ = noisy
    oracle = Oracle(model, "gradient", len(x), eot_samples=DRAWS)
    model.reseed(5)
    got = oracle.logits(x)
    model.reseed(5)
    expected = torch.stack([model(x) for _ in range(DRAWS)]).mean(dim=0)
    assert torch.equal(got, expected)
    assert oracle.queries.tolist() == [1] * len(x)


def test_gradient_is_the_gradient_of_the_loss_of_the_expected_logits(noisy):
    """The one semantics: ``gradient(x, y, loss)`` is what differentiating
    ``loss(logits(x), y)`` gives, draw for draw; and it is an expectation (EOT), not one draw."""
    model, x, y = noisy
    oracle = Oracle(model, "gradient", len(x), eot_samples=DRAWS)
    model.reseed(7)
    grad, logits = oracle.gradient(x, y, loss=margin_sum)
    model.reseed(7)
    x_own = x.clone().requires_grad_(True)
    own_logits = oracle.logits(x_own)
    (own,) = torch.autograd.grad(margin_sum(own_logits, y), x_own)
    assert torch.equal(grad, own) and torch.equal(logits, own_logits.detach())
    model.reseed(7)
    (one_draw,) = torch.autograd.grad(margin_sum(model(x_own), y), x_own)
    assert not torch.equal(grad, one_draw)  # the margin's argmax moves with the noise
    assert oracle.queries.tolist() == [2] * len(x)


def test_a_budget_is_in_requests_not_draws(noisy):
    model, x, y = noisy
    oracle = Oracle(model, "gradient", len(x), max_queries=2, eot_samples=DRAWS)
    oracle.gradient(x, y)
    oracle.logits(x[:2], index=torch.tensor([0, 1]))
    with pytest.raises(QueryBudgetExceeded):
        oracle.logits(x[:1], index=torch.tensor([0]))
    assert oracle.queries.tolist() == [2, 2, 1, 1, 1, 1]
    assert F.cross_entropy(oracle.logits(x[2:], index=torch.arange(2, 6)), y[2:]).isfinite()


def test_the_guard_counts_one_query_for_eight_draws(noisy):
    model, x, y = noisy
    seal = Seal(model, [Pristine({"x": x})])
    with seal.cell():
        watch = seal.watch("gradient", STEPS + 1, DRAWS, len(x))
        oracle = Oracle(model, "gradient", len(x), STEPS + 1, DRAWS, guard=watch)
        for _ in range(STEPS):
            oracle.gradient(x, y)
        oracle.logits(x)
        attack = Stepwise(steps=STEPS + 1)
        assert seal.verdict(watch, oracle, attack) is None
    assert watch.queries.tolist() == [STEPS + 1] * len(x)
