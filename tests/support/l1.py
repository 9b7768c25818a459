"""Helpers of tests/unit/test_l1.py and tests/e2e/test_l1_e2e.py: a third party's L1 attack."""

from __future__ import annotations

from advbench import Attack
from advbench.threat import normalize, project


class L1Step(Attack):
    """A correct one-step L1 attack: the L1-normalized gradient scaled past ε, projected onto
    the ball."""

    name = "l1-step"
    norms = ("l1",)

    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        return (x + project(2 * threat.eps * normalize(grad, "l1"), threat)).clamp(0, 1)
