"""Presets: training and evaluation sizes for the hardware at hand. Flags override them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from advbench.errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    n_train: int | None  # None: the whole training split
    epochs: int
    n_eval: int
    description: str
    # Epochs of the defenses whose epoch costs several clean ones (an attack or a bound per
    # batch), where they differ from ``epochs``: what keeps the default matrix in minutes.
    defense_epochs: Mapping[str, int] = field(default_factory=dict)
    # Constructor arguments of built-in plugins, by plugin name, where the preset sizes them
    # differently from their defaults; they are recorded in each row's configs.
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def epochs_for(self, defense: str) -> int:
        return self.defense_epochs.get(defense, self.epochs)

    def options_for(self, plugin: str) -> dict[str, Any]:
        return dict(self.options.get(plugin, {}))


# An epoch of adversarial or certified training costs 2-6 clean ones (an attack or a bound per
# batch); randomized smoothing pays n forward passes per prediction and m per query.
CPU_EPOCHS = {"adv-train-fgsm": 1, "adv-train-pgd": 1, "certified-training": 1,
              "gaussian-smoothing": 2}
# APGD (defaults: AutoAttack's 100 iterations, 9 target classes) sized to the cpu matrix. Measured
# on 150 samples of an FGSM-trained seed CNN (L∞ 0.1, 2 cores shared five ways, ~5x slower than
# alone): PGD-20 53 s / 11.5 queries a sample; apgd-ce 20 iterations 64 s / 10.3 (robust 0.467
# vs PGD's 0.487); apgd-t 10 iterations × 3 targets 101 s / 16.2. The other defenses cost less.
CPU_APGD = {"apgd-ce": {"iterations": 20}, "apgd-dlr": {"iterations": 10},
            "apgd-t": {"iterations": 10, "target_classes": 3}}
CPU_OPTIONS = {"gaussian-smoothing": {"n": 100, "m": 2}, "pixel-scan": {"values": (1.0,)},
               **CPU_APGD}
PAPER_EPOCHS = {"adv-train-fgsm": 5, "adv-train-pgd": 10, "certified-training": 5}
# Measured on the whole test split (PGD-20, L-inf 0.1): 5 epochs all-adversarial gave 0.846 clean
# / 0.693 robust; 10 epochs with 30 % of each batch clean gave 0.858 / 0.757 (issue #5's targets).
PAPER_OPTIONS = {"adv-train-pgd": {"clean_fraction": 0.3},
                 "apgd-ce": {"iterations": 50}, "apgd-dlr": {"iterations": 50},
                 "apgd-t": {"iterations": 20, "target_classes": 9}}

PRESETS = {
    preset.name: preset
    for preset in (
        Preset("smoke", 10000, 1, 200, "seconds: checks that everything runs, numbers are rough",
               options=CPU_APGD),
        Preset("cpu", None, 3, 150, "default: the whole matrix in about 10 minutes on a 2-core "
               "CPU; costly defenses train 1-2 epochs", CPU_EPOCHS, CPU_OPTIONS),
        Preset("paper", None, 10, 500, "larger: 10 epochs (5 for FGSM-adversarial and certified "
               "training), 500 evaluation samples; over an hour on a 2-core CPU",
               PAPER_EPOCHS, PAPER_OPTIONS),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
