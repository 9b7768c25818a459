"""Honest attacks written with ``torch.func`` run valid (issue #26 point 3).

The oracle counts outside autograd and functorch, so ``grad``, ``jvp`` and ``vmap`` may run
through ``oracle.logits``; under ``vmap`` it charges every lane the model runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from advbench import Attack, AttackContext, Oracle, ThreatModel
from advbench.conformance import check_attack, tiny_batch
from advbench.oracle import QueryBudgetExceeded
from advbench.seal import Pristine, Seal
from advbench.threat import clip_to_box, l2_normalize


@dataclass(kw_only=True)
class FuncFGSM(Attack):
    """One signed (L∞) or normalised (L2) gradient step, the gradient taken with
    ``torch.func.grad``: per sample under ``vmap`` (each row queried with its ``index``), or
    for the whole batch at once."""

    name = "func-fgsm"
    norms = ("linf", "l2")
    access = "gradient"
    targeted = True
    single_step = True
    max_queries = 1
    description = "FGSM/FGM with torch.func.grad (per sample under vmap, or batched)"

    per_sample: bool = True

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        criterion = ctx.criterion(y)
        if self.per_sample:
            def loss(xi, yi, i):
                return F.cross_entropy(oracle.logits(xi[None], index=i[None]), yi[None])

            g = vmap(grad(loss))(x, criterion.labels, torch.arange(len(x), device=x.device))
        else:
            g = grad(lambda z: F.cross_entropy(oracle.logits(z), criterion.labels,
                                               reduction="sum"))(x)
        step = g.sign() if threat.norm == "linf" else l2_normalize(g)
        return clip_to_box(x + criterion.sign * threat.eps * step)


@pytest.mark.parametrize("per_sample", [True, False])
def test_a_torch_func_attack_passes_the_kit(per_sample):
    check_attack(FuncFGSM, params={"per_sample": per_sample})


def test_per_sample_gradients_by_vmap_are_the_oracles_and_cost_one_query():
    batch = tiny_batch()
    oracle = Oracle(batch.model, "gradient", len(batch.x))
    x = batch.x.clone()
    got = FuncFGSM().run(oracle, x, batch.y, ThreatModel("linf", 0.1), AttackContext(
        torch.Generator().manual_seed(0)))
    expected, _ = Oracle(batch.model, "gradient", len(x)).gradient(x, batch.y)
    assert torch.equal(got, clip_to_box(x + 0.1 * expected.sign()))
    assert oracle.queries.tolist() == [1] * len(x)


def test_vmap_over_candidates_charges_every_lane_and_the_budget_holds():
    batch = tiny_batch()
    seal = Seal(batch.model, [Pristine({"x": batch.x})])
    index = torch.arange(len(batch.x))
    with seal.cell():
        watch = seal.watch("gradient", 6, 1, len(batch.x))
        oracle = Oracle(batch.model, "gradient", len(batch.x), 6, guard=watch)
        candidates = torch.rand(5, *batch.x.shape, generator=torch.Generator().manual_seed(1))
        logits = vmap(lambda c: oracle.logits(c, index=index))(candidates)
        assert logits.shape == (5, len(batch.x), 3)
        assert oracle.queries.tolist() == [5] * len(batch.x)
        with pytest.raises(QueryBudgetExceeded):  # 5 more would take each sample to 10 > 6
            vmap(lambda c: oracle.logits(c, index=index))(candidates)
        assert seal.verdict(watch, oracle, SimpleNamespace(access="gradient",
                                                           max_queries=6)) is None
    assert watch.queries.tolist() == [5] * len(batch.x)
