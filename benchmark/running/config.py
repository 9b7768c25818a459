"""What defines a run, :class:`RunConfig`: the one source of its defaults, for the Python API
and the ``bench run`` flags alike. Light on purpose (no torch): ``bench --help`` reads it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advbench.plugin_system.options import Options

SPLIT_CHOICES = ("test", "train", "both")


@dataclass
class RunConfig:
    """Everything that defines a run. ``None`` means: take it from the preset or the dataset."""

    attacks: str | Sequence[str] = "all"
    defenses: str | Sequence[str] = "all"
    dataset: str = "fashion-mnist"
    model: str = "seed-cnn"
    eps: Mapping[str, Sequence[float]] | None = None
    preset: str = "cpu"
    n_eval: int | None = None
    n_train: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    split: str = "test"
    data_root: Path | None = None
    out: Path | None = None
    cache_dir: Path | None = None
    batch_size: int = 250
    strict_plugins: bool = False
    targeted: str | None = None  # None, "random", "least-likely" or a class index
    resume: bool = False  # reuse the finished cells found in ``out``
    fresh: bool = False  # compute every cell and train every model: read no cache (still write)
    eot_samples: int = 8  # gradient draws per step against a randomized defended model
    # AutoAttack's cascade: per defense and threat model, attacks run cheapest first
    # (``cascade_rank``), each on the samples every earlier one failed on. None: the preset's
    # choice (``Preset.cascade``: cpu and paper cascade, smoke runs the full matrix).
    cascade: bool | None = None
    # Where attacks run: "auto" runs every attack not shipped with bench in a process of its own
    # (advbench.running.isolation), "all" every attack, "none" none (the user vouches for the
    # plugins' code). ``cell_timeout`` (seconds: an hour, so that no plugin hangs a run) and
    # ``attack_memory`` (GiB of address space) bound each isolated cell; 0 or None: no bound.
    isolation: str = "auto"
    cell_timeout: float | None = 3600.0
    attack_memory: float = 8.0
    # Plugin arguments, plugin → argument → values; several values run one variant each.
    options: Options | None = None


def defaults() -> dict[str, Any]:
    """Every field's default, by name (each field has one)."""
    return {spec.name: spec.default for spec in dataclasses.fields(RunConfig)}
