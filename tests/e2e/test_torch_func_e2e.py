"""Honest attacks written with ``torch.func`` run valid (issue #26 point 3).

The oracle counts outside autograd and functorch, so ``grad``, ``jvp`` and ``vmap`` may run
through ``oracle.logits``; under ``vmap`` it charges every lane the model runs on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from support.torch_func import FuncFGSM
from torch.func import jvp, vmap

from advbench import Attack, AttackContext, Oracle, ThreatModel, hookimpl, load_registry, run_matrix
from advbench.conformance import check_attack
from advbench.threat import clip_to_box


@dataclass(kw_only=True)
class JvpSearch(Attack):
    """Forward mode: among ``directions`` random sign directions, the step along the one with
    the largest directional derivative of each sample's loss (``jvp``, ``vmap``'d over the
    directions: the model runs once, so one query per sample)."""

    name = "jvp-search"
    norms = ("linf",)
    access = "gradient"
    randomized = True
    max_queries = 1
    description = "best of random sign directions by their directional derivative (jvp)"

    directions: int = 4

    def run(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
            ctx: AttackContext) -> torch.Tensor:
        dirs = torch.randint(0, 2, (self.directions, *x.shape), generator=ctx.generator,
                             device=x.device).to(x.dtype) * 2 - 1

        def losses(z):
            return F.cross_entropy(oracle.logits(z), y, reduction="none")

        slopes = vmap(lambda d: jvp(losses, (x,), (d,))[1])(dirs)  # directions × samples
        best = dirs[slopes.argmax(dim=0), torch.arange(len(x), device=x.device)]
        return clip_to_box(x + threat.eps * best)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [FuncFGSM, JvpSearch]


def test_a_jvp_attack_passes_the_kit():
    check_attack(JvpSearch)


@pytest.fixture(scope="module")
def func_run(tmp_path_factory):
    registry = load_registry(extra=[sys.modules[__name__]])
    frame = run_matrix(attacks="func-fgsm,jvp-search,fgsm", defenses="none", registry=registry,
                       preset="smoke", n_train=1000, n_eval=40, eps={"linf": [0.1]},
                       batch_size=16, cache_dir=tmp_path_factory.mktemp("func-cache"))
    return frame[frame["attack"] != ""].set_index("attack")


def test_torch_func_attacks_run_valid_in_a_run(func_run):
    for attack in ("func-fgsm", "jvp-search"):
        row = func_run.loc[attack]
        assert row["status"] == "ok", row["invalid_reason"]
        assert row["queries_mean"] == 1
    # per-sample torch.func gradients are FGSM's: the same robust accuracy, sample for sample
    assert func_run.loc["func-fgsm", "robust_accuracy"] == func_run.loc["fgsm",
                                                                        "robust_accuracy"]
