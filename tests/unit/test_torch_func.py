"""Honest attacks written with ``torch.func`` run valid (issue #26 point 3).

The oracle counts outside autograd and functorch, so ``grad``, ``jvp`` and ``vmap`` may run
through ``oracle.logits``; under ``vmap`` it charges every lane the model runs on.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from support.torch_func import FuncFGSM
from torch.func import vmap

from advbench import AttackContext, Oracle, ThreatModel
from advbench.conformance import check_attack, tiny_batch
from advbench.oracle import QueryBudgetExceeded
from advbench.seal import Pristine, Seal
from advbench.threat import clip_to_box


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
