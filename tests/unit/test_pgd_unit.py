"""PGD (L∞ and L2): the sanity checks of Carlini et al. 2019 on the trained seed CNN, plus the
invariants of the shared primitive (early exit, restarts, seeding, zero gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbench import ThreatModel, load_registry
from advbench.algorithms.pgd import model_gradient, model_logits, pgd, sample_start
from advbench.threat import perturbation_size
from advbench_plugins import pgd_l2, pgd_linf


def test_registered_with_madry_step_rule():
    registry = load_registry(extra=[pgd_linf, pgd_l2])
    for name, cls in (("pgd-linf", pgd_linf.PGDLinf), ("pgd-l2", pgd_l2.PGDL2)):
        assert registry.get("attack", name).cls is cls
        attack = cls()
        assert attack.steps * attack.rel_step_size == pytest.approx(2.5)
        assert cls(steps=10).rel_step_size == pytest.approx(0.25)
        assert cls.access == "gradient" and cls.targeted and cls.randomized


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 1.0)])
def test_random_start_is_inside_ball(batch, norm, eps):
    x = batch[0][:200]
    start = sample_start(x, ThreatModel(norm, eps), torch.Generator().manual_seed(1))
    size = perturbation_size(start - x, norm)
    assert float(size.max()) <= eps + 1e-6 and float(size.min()) > 0
    assert float(start.min()) >= 0.0 and float(start.max()) <= 1.0


class Corner(nn.Module):
    """Class 1 only where the first pixel exceeds 0.58: from x = 0.5 at L∞ ε = 0.1, a tenth of
    the ball, which no gradient reaches (there is none) but a random start may land in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x.flatten(1)[:, 0] > 0.58).to(x.dtype)
        return torch.stack([1 - h, h], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_find_what_the_first_start_missed(norm):
    """Each restart draws a fresh start: the samples the first missed, later ones find; the
    first restart is the single run, and no found sample is lost."""
    x = torch.full((200, 1, 2, 2), 0.5)
    y = torch.zeros(200, dtype=torch.long)
    model, threat = Corner(), ThreatModel(norm, 0.1 if norm == "linf" else 0.2)

    def fooled(restarts: int) -> torch.Tensor:
        x_adv = pgd(model_gradient(model), x, y, threat, steps=0, step_size=0.01,
                    restarts=restarts, generator=torch.Generator().manual_seed(3),
                    logits=model_logits(model))
        return model(x_adv).argmax(dim=1) != y

    once, many = fooled(1), fooled(10)
    assert 0 < int(once.sum()) < 60
    assert not bool((once & ~many).any())
    assert int(many.sum()) > 2 * int(once.sum())
