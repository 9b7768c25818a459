"""Fast adversarial training with FGSM and a random start (Wong, Rice & Kolter 2020), L∞.

Each batch: δ ~ U(−ε, ε), x₀ = clip₀¹(x + δ); one signed gradient step of α = ``alpha_ratio``·ε
from x₀, projected back onto the ε-ball around x and clipped to [0, 1]; the weights are trained
on those examples. The random start and α = 1.25ε are what make single-step training work;
it can still *catastrophically overfit* (robust accuracy collapsing within an epoch), so a
guard measures PGD robust accuracy on held-out training samples after every epoch and, on a
collapse, restores the last good weights and stops (``advbench.algorithms.adversarial_training``).

Arguments:
    eps: training radius (default: the run's largest ε in ``norm``, e.g. 0.1 on Fashion-MNIST,
        8/255 on CIFAR-10); norm: ``linf`` (or ``l2``).
    alpha_ratio: step α/ε (1.25).
    clean_fraction: share of each batch kept clean, to keep clean accuracy up (0.0).
    holdout, monitor: training samples set aside for validation / watched among those trained
        on (256 each); guard_steps: PGD steps of the guard's measurement (10).
    collapse_ratio, collapse_min_best: a collapse is robust accuracy below ratio × best so far,
        once the best reaches min_best (0.5, 0.1); checks_per_epoch: guard checks per epoch (1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from advbench import Defense, hookimpl
from advbench.algorithms.adversarial_training import AdversarialTraining
from advbench.algorithms.pgd import model_gradient, pgd


@dataclass(kw_only=True)
class AdvTrainFGSM(AdversarialTraining):
    name = "adv-train-fgsm"
    description = "fast FGSM adversarial training, random start, α = 1.25ε (Wong et al. 2020)"
    # An epoch of adversarial or certified training costs 2-6 clean ones (an attack or a bound
    # per batch): what keeps the default matrix in minutes.
    preset_epochs = {"cpu": 1, "paper": 5}

    alpha_ratio: float = field(default=1.25, metadata={"gt": 0})

    def attack_label(self) -> str:
        return f"FGSM-RS α={self.alpha_ratio:g}ε, ε={self.threat.eps:g} {self.norm}"

    def adversarial_examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             generator: torch.Generator | None) -> torch.Tensor:
        threat = self.threat
        return pgd(model_gradient(model), x, y, threat, steps=1,
                   step_size=self.alpha_ratio * threat.eps, early_exit=False, return_final=True,
                   generator=generator)


@hookimpl
def bench_defenses() -> list[type[Defense]]:
    return [AdvTrainFGSM]
