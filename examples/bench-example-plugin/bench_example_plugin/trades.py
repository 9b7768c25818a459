"""TRADES (Zhang et al., ICML 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x')), where x' maximises the
KL inside the ε-ball (PGD from a random start, in eval mode). Built on bench's
adversarial-training base: ε is the run's unless ``eps`` is set, the random start draws from the
run's seeded generator, and the training curves and the collapse guard come with it.

Arguments: beta (KL weight, 6.0 as in the paper), steps (PGD steps, 5); eps, norm, holdout,
monitor, ... as for bench's adv-train-pgd.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from advbench import Defense, hookimpl, kl_divergence, kl_loss
from advbench.algorithms.adversarial_training import AdversarialTraining
from advbench.algorithms.pgd import pgd_step, sample_start
from torch import nn


@dataclass(kw_only=True)
class Trades(AdversarialTraining):
    name = "trades"
    description = "TRADES (Zhang et al. 2019): CE + β·KL(clean ‖ adversarial), KL-PGD inside"

    beta: float = field(default=6.0, metadata={"ge": 0})
    steps: int = field(default=5, metadata={"ge": 1})

    def adversarial_examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             generator: torch.Generator | None) -> torch.Tensor:
        model.eval()  # the loop puts it back in train mode for the next batch
        threat, clean = self.threat, model(x).detach()
        x_adv = sample_start(x, threat, generator)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(kl_loss(model(x_adv), clean), x_adv)
            x_adv = pgd_step(x_adv.detach(), grad, x, threat, 2.5 * threat.eps / self.steps)
        return x_adv

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      progress: float) -> torch.Tensor:
        x_adv = self.adversarial_examples(model, x, y, self.context.generator)
        model.train()  # the loss itself in train mode
        logits = model(x)
        return F.cross_entropy(logits, y) + self.beta * kl_divergence(model(x_adv), logits).mean()


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [Trades]
