"""Presets: training and evaluation sizes for the hardware at hand. Flags override them."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    n_train: int | None  # None: the whole training split
    epochs: int
    n_eval: int
    description: str


PRESETS = {
    preset.name: preset
    for preset in (
        Preset("smoke", 10000, 1, 200, "seconds: checks that everything runs, numbers are rough"),
        Preset("cpu", None, 3, 250, "default: the whole matrix in minutes on a 2-core CPU"),
        Preset("paper", None, 15, 10000, "paper-grade numbers: full test split, longer training"),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
