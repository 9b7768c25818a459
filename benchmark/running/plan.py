"""The plan of a run: what to train, what to attack, on which samples, all validated.

``build_plan`` resolves a :class:`RunConfig` against the plugin registry and the data before
anything is trained or written; a bad input is a one-line :class:`UsageError` here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import tempfile
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench._util import one_line
from advbench.data import Dataset, Split, missing_reason
from advbench.defense import TrainSettings
from advbench.errors import UsageError, path_problem
from advbench.models import ImportedModel, ModelPlugin
from advbench.plugin_system.declared import Declared, resolve_declared
from advbench.plugin_system.options import check_targets, coerce, describe, expand, shown
from advbench.plugin_system.presets import Preset, get_preset
from advbench.plugin_system.registry import Entry, Registry
from advbench.running.config import SPLIT_CHOICES, RunConfig
from advbench.threat import NORMS, ThreatModel

WORST_CASE = "worst-case"
PATHS = ("data_root", "out", "cache_dir")  # "" would silently mean the current folder
# The integer settings and their sane range: past it a value is a typo that would overflow
# int64 in the results files, or ask for more memory or processes than any machine has.
LIMITS: dict[str, tuple[int, int]] = {
    "n_eval": (1, 10**7), "n_train": (1, 10**8), "epochs": (1, 10_000),
    "batch_size": (1, 2**20), "eot_samples": (1, 10_000), "seed": (0, 2**63 - 1),
    "workers": (1, 1024),
}


def flag(key: str) -> str:
    """The command-line flag of a config key."""
    return "--set" if key == "options" else f"--{key.replace('_', '-')}"


def check_limit(key: str, value: int | None, label: str | None = None) -> None:
    """An integer setting must lie in its ``LIMITS`` range (None: the preset decides)."""
    low, high = LIMITS[key]
    if value is None or low <= value <= high:
        return
    kind = "a positive integer" if low == 1 else f"an integer from {low}"
    raise UsageError(f"{label or flag(key)} must be {kind} up to {high:,}, got {shown(value)}")


def check_config(config: RunConfig, where: str | None = None) -> None:
    """Every setting has its annotated type and lies in its range; ``where`` names the file
    the config came from (a resumed run's manifest), else the flags are named."""
    hints = typing.get_type_hints(RunConfig)
    for spec in dataclasses.fields(RunConfig):
        value = getattr(config, spec.name)
        label = f"{where}: key {spec.name!r}" if where else flag(spec.name)
        try:
            coerce(value, hints[spec.name])
        except TypeError:
            raise UsageError(f"{label}: expected {describe(hints[spec.name])}, got "
                             f"{shown(repr(value))}") from None
        if spec.name in LIMITS:
            check_limit(spec.name, value, label)
        if spec.name in PATHS and value is not None and (problem := path_problem(value)):
            raise UsageError(f"{label}: {problem}")


def minimum_norm(entry: Entry | None) -> bool:
    """Whether ``entry`` is a minimum-norm attack (its class declares ``minimum_norm``)."""
    return entry is not None and getattr(entry.cls, "minimum_norm", False) is True


def outside_chain(defense: Entry, attack: Entry | None) -> bool:
    """Whether a cascade runs ``attack`` against ``defense`` outside the chain, on every
    correctly classified sample (its cells skip nothing, see :class:`Cell`): a minimum-norm
    attack, so that each sample gets its radius (the robustness curve's), against a defense not
    declaring itself randomized. Against a randomized one it stays in the chain, on what the
    attacks before it left: there each of its steps is a gradient under EOT (FMN's two cells
    on every sample cost 28 s against gaussian-smoothing at the cpu preset, 9 s chained), and
    a radius found against one noisy draw says little."""
    return minimum_norm(attack) and not defense.cls.randomized


@dataclass
class Cell:
    """One cell; ``attack`` is None for the per-sample worst case over a group of cells.
    ``skip``: in a cascade, the samples earlier attacks of its chain already fooled (not
    attacked again, counted as fooled); a plan's cell is the same cell whatever it skips.
    A cell that runs outside the chain (:func:`outside_chain`: a minimum-norm attack) skips
    nothing."""

    defense: Entry
    attack: Entry | None
    threat: ThreatModel
    split: str
    skip: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.skip and outside_chain(self.defense, self.attack):
            self.skip = ()

    @property
    def attack_name(self) -> str:
        return self.attack.name if self.attack else WORST_CASE


@dataclass
class Plan:
    """The resolved run: plugins, data, ε and cells, all validated."""

    config: RunConfig
    dataset: Dataset
    model_plugin: ModelPlugin
    defenses: list[Entry]
    attacks: list[Entry]
    eps: dict[str, list[float]]
    device: torch.device
    train: Split
    evaluation: dict[str, Split]
    sample_hashes: dict[str, str]
    settings: dict[str, TrainSettings]  # per defense: the preset may train some less
    preset: Preset
    cells: list[Cell] = field(default_factory=list)
    # In a cascade, the cells AutoAttack's version for randomized defenses leaves out (see
    # ``randomized_version``): not run, named in the defense's flags.
    left_out: list[Cell] = field(default_factory=list)
    # Where the model plugin came from (distribution and version, or the imported factory): a
    # fixed architecture must not load the old one's cached weights.
    model_source: tuple[str, str] = ("", "")

    def build(self, entry: Entry) -> Any:
        """An attack or defense instance: the preset's arguments for it, then the user's."""
        return entry.cls(**{**self.preset.options_for(entry.cls), **dict(entry.arguments)})


def cascade_rank(entry: Entry, defense: Entry | None = None) -> int:
    """Where an attack stands in a cascade, cheapest and most informed first: single-step
    gradient attacks, iterative gradient attacks, score-based, then decision-based ones (within
    a rank, the order of ``--attacks``). Black-box attacks coming after every white-box one
    keeps the gradient-masking check meaningful: what they still break, gradients missed.
    Against ``defense``, attacks that run outside the chain (:func:`outside_chain`: minimum-norm
    ones) come last: they skip nothing, and standing after every other attack, what they break
    feeds no skip to a chained one; the worst case still counts what they broke. (Against a
    randomized defense a minimum-norm attack is a chained gradient attack like any other: last,
    its cumulative row would count what black-box attacks broke as white-box evidence.)"""
    if defense is not None and outside_chain(defense, entry):
        return 4
    access = entry.cls.access
    if access == "gradient":
        return 0 if entry.cls.single_step else 1
    return 2 if access == "scores" else 3


def chains(cells: Sequence[Cell]) -> list[list[Cell]]:
    """A cascade's chains: one defense's cells grouped by split and threat model, each chain in
    the order of ``cells`` (the plan's, cheapest first)."""
    grouped: dict[tuple[str, str, str, float], list[Cell]] = {}
    for cell in cells:
        key = (cell.defense.name, cell.split, cell.threat.norm, cell.threat.eps)
        grouped.setdefault(key, []).append(cell)
    return list(grouped.values())


def randomized_version(cells: Sequence[Cell]) -> list[Cell]:
    """The cells a cascade leaves out against a defense declaring itself randomized: those of
    attacks declaring ``against_randomized = False``, in a chain where another attack runs
    (AutoAttack's version for randomized defenses keeps APGD-CE and APGD-DLR with EOT)."""
    left_out = []
    for chain in chains(cells):
        dropped = [cell for cell in chain if cell.defense.cls.randomized
                   and cell.attack is not None and not cell.attack.cls.against_randomized]
        if len(dropped) < len(chain):
            left_out += dropped
    return left_out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def resolve_eps(
    requested: Mapping[str, Sequence[float]] | None, attacks: list[Entry], dataset: Dataset
) -> dict[str, list[float]]:
    """ε values per norm: the request's norms only (``--eps linf=0,0.1`` runs no L2 cell), or
    without one the dataset's defaults for every norm an attack supports. A requested norm no
    selected attack supports is a usage error."""
    supported = {norm for entry in attacks for norm in entry.cls.norms}
    eps = {} if requested else {norm: [float(dataset.default_eps[norm])]
                                for norm in sorted(supported) if norm in dataset.default_eps}
    for norm, values in (requested or {}).items():
        if norm not in NORMS:
            raise UsageError(f"--eps: unknown norm {norm!r}; choose among {', '.join(NORMS)}")
        if norm not in supported:
            raise UsageError(f"--eps {norm}: none of the selected attacks supports {norm} "
                             f"(they support {', '.join(sorted(supported)) or 'nothing'})")
        values = [float(v) + 0.0 for v in values]  # -0.0 becomes 0.0: never "ε=-0"
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise UsageError(f"--eps {norm}: ε must be finite numbers >= 0, got {values}")
        if norm == "l0" and any(not v.is_integer() for v in values):
            raise UsageError(f"--eps l0={','.join(f'{v:g}' for v in values)}: the L0 ε counts "
                             "pixels that may change; give whole numbers, e.g. --eps l0=1,5")
        eps[norm] = sorted(set(values))
    return eps


def sample_index(n_total: int, n: int, seed: int) -> torch.Tensor:
    """A seeded, sorted subset of ``n`` indices out of ``n_total``."""
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[:n].sort().values


def index_hash(index: torch.Tensor) -> str:
    return hashlib.sha256(index.numpy().astype("int64").tobytes()).hexdigest()[:16]


def targeted_attacks(attacks: list[Entry], config: RunConfig, dataset: Dataset) -> list[Entry]:
    """With --targeted, keep the attacks that support it (naming one that does not is an error)."""
    mode = config.targeted
    if mode is None:
        return attacks
    parse_targeted(mode, dataset.num_classes)
    capable = [entry for entry in attacks if entry.cls.targeted]
    if config.attacks != "all" and len(capable) < len(attacks):
        names = ", ".join(e.name for e in attacks if not e.cls.targeted)
        raise UsageError(f"--targeted: {names} cannot run targeted; drop it from --attacks")
    if not capable:
        raise UsageError("--targeted: none of the selected attacks supports targets")
    return capable


def parse_targeted(mode: str, num_classes: int) -> str:
    """``--targeted``: random, least-likely or a class index (ASCII digits) below
    ``num_classes``; anything else is a usage error."""
    if mode in ("random", "least-likely") or (
            mode.isascii() and mode.isdigit() and len(mode) < 7 and int(mode) < num_classes):
        return mode
    raise UsageError(f"--targeted {shown(mode)}: choose random, least-likely or a class index "
                     f"0..{num_classes - 1}")


def check_selection(kind: str, spec: str | Sequence[str]) -> None:
    """``all`` means every plugin of the kind: it cannot be listed with names."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    if "all" in names and len([n for n in names if n]) > 1:
        raise UsageError(f"--{kind}s {shown(spec if isinstance(spec, str) else ','.join(spec))}"
                         f": 'all' stands alone (it is every {kind}); give --{kind}s all, or "
                         "only names")


def check_model(plugin: ModelPlugin, dataset: Dataset) -> None:
    """A ``package.module:factory`` model is built and run once now, on the CPU, with the
    dataset's shape: a factory that is not one fails before anything is trained or written."""
    if not isinstance(plugin, ImportedModel):
        return
    shape, classes = (*dataset.shape,), dataset.num_classes
    label = f"--model {plugin.name!r}"
    try:
        model = plugin.build(shape, classes)
        logits = probe_logits(model, shape)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{label}: building it for {classes} classes of {shape} images and "
                         f"running it failed ({one_line(exc)}); give a factory returning a "
                         "torch.nn.Module") from None
    check_logits(logits, classes, label)


def check_user_model(model: nn.Module, dataset: Dataset) -> None:
    """A module passed to ``run_matrix`` must take the dataset's images and return its
    classes' logits: run once now on two images, its train/eval modes left as found."""
    label = f"run_matrix(model={type(model).__name__})"
    if not isinstance(model, nn.Module):
        raise UsageError(f"{label}: expected a torch.nn.Module, a model plugin name or "
                         "'package.module:factory'")
    modes = [(module, module.training) for module in model.modules()]
    try:
        logits = probe_logits(model, tuple(dataset.shape))
    except Exception as exc:
        raise UsageError(f"{label}: running it on 2 {'×'.join(map(str, dataset.shape))} "
                         f"images of {dataset.name} failed ({one_line(exc)}); pass a model of "
                         "this dataset") from None
    finally:
        for module, training in modes:
            module.training = training
    check_logits(logits, dataset.num_classes, label)


@torch.no_grad()
def probe_logits(model: nn.Module, shape: tuple[int, ...]) -> Any:
    """What ``model`` (in eval mode) returns for two seeded random images in [0, 1] (blank
    ones could divide by a zero standard deviation), on its own device."""
    device = next(model.parameters(), torch.empty(0)).device
    images = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    return model.eval()(images.to(device))


def check_logits(logits: Any, classes: int, label: str) -> None:
    """Logits of shape (2, classes), not NaN: NaN logits would score as a constant class (and
    NaN ≠ NaN as a randomized model)."""
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(f"{label}: returns {got} for 2 images, not logits of shape "
                         f"(2, {classes})")
    if torch.isnan(logits).any():
        raise UsageError(f"{label}: returns NaN logits for 2 images in [0, 1]; fix the model")


def given_or_preset(key: str, config: RunConfig, preset: Preset) -> str:
    """How a message names a sample count: its flag when the user gave it, else the preset
    it came from (the user never typed it)."""
    if getattr(config, key) is not None:
        return flag(key)
    return f"the {preset.name} preset's {flag(key)}"


def check_cache_dir(path: Path | None) -> None:
    """The model cache must be (or go in) a folder bench can write a file in: found out now,
    not after training. The nearest existing folder is tried with a one-byte file (a full
    disk or a read-only mount fail there), removed at once."""
    if path is None:
        return
    path = Path(path)
    for existing in (path, *path.parents):
        if os.path.lexists(existing):
            break
    if not existing.is_dir():
        raise UsageError(f"--cache-dir {path}: {existing} {missing_reason(existing)}; choose a "
                         "folder")
    try:
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"0")
            probe.flush()
    except OSError as exc:
        raise UsageError(f"--cache-dir {path}: cannot write in {existing} ({exc.strerror}); "
                         "choose a writable folder") from None


@torch.no_grad()
def choose_targets(mode: str, model: nn.Module, data: Split, num_classes: int,
                   batch_size: int, device: torch.device, seed: int) -> torch.Tensor:
    """One target label per sample: a seeded random other class, the least-likely class under
    the defended model, or a fixed class."""
    if mode == "random":
        shift = torch.randint(1, num_classes, (len(data),),
                              generator=torch.Generator().manual_seed(seed + 2))
        return (data.y + shift) % num_classes
    if mode == "least-likely":
        return torch.cat([model(data.x[i : i + batch_size].to(device)).argmin(dim=1).cpu()
                          for i in range(0, len(data), batch_size)])
    return torch.full_like(data.y, int(mode))


def resolve_model(registry: Registry, name: str) -> ModelPlugin:
    if ":" in name:
        return ImportedModel(name)
    return registry.get("model", name).cls()


def check_arguments(plan: Plan, entry: Entry) -> None:
    """A plugin given arguments must accept them: build it once now, not fail in every cell."""
    if not entry.arguments:
        return
    try:
        plan.build(entry)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--set for {entry.name}: {exc}") from exc


def build_plan(config: RunConfig, registry: Registry) -> Plan:
    """Resolve and check every input; raises UsageError/BenchError before anything is written."""
    check_config(config)
    preset = get_preset(config.preset)
    if config.cascade is None:  # recorded as decided, so a resumed run keeps it
        config = dataclasses.replace(config, cascade=preset.cascade)
    if config.split not in SPLIT_CHOICES:
        raise UsageError(f"--split {config.split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    check_selection("attack", config.attacks)
    check_selection("defense", config.defenses)
    check_cache_dir(config.cache_dir)
    device = resolve_device(config.device)
    dataset = registry.get("dataset", config.dataset).cls()
    model_plugin = resolve_model(registry, config.model)
    check_model(model_plugin, dataset)
    defenses = registry.resolve("defense", config.defenses)
    attacks = targeted_attacks(registry.resolve("attack", config.attacks), config, dataset)
    check_targets(config.options, attacks + defenses)
    defenses, attacks = expand(defenses, config.options), expand(attacks, config.options)
    eps = resolve_eps(config.eps, attacks, dataset)

    full_train = dataset.load("train", config.data_root)
    n_train = config.n_train or preset.n_train or len(full_train)
    if n_train > len(full_train):
        raise UsageError(f"{given_or_preset('n_train', config, preset)} {n_train} exceeds the "
                         f"{len(full_train)} training samples; pass --n-train "
                         f"{len(full_train)} or fewer")
    train = full_train.subset(sample_index(len(full_train), n_train, config.seed))
    n_eval = config.n_eval or preset.n_eval
    splits = ["test", "train"] if config.split == "both" else [config.split]
    evaluation, hashes = {}, {}
    for split in splits:
        source = full_train if split == "train" else dataset.load("test", config.data_root)
        if n_eval > len(source):
            raise UsageError(f"{given_or_preset('n_eval', config, preset)} {n_eval} exceeds the "
                             f"{len(source)} samples of the {split} split; pass --n-eval "
                             f"{len(source)} or fewer")
        index = sample_index(len(source), n_eval, config.seed + 1)
        evaluation[split], hashes[split] = source.subset(index), index_hash(index)
    settings = {entry.cls.name: TrainSettings(epochs=config.epochs
                                              or preset.epochs_for(entry.cls),
                                              n_train=n_train) for entry in defenses}
    plan = Plan(config, dataset, model_plugin, defenses, attacks, eps, device, train,
                evaluation, hashes, settings, preset)
    if ":" not in config.model:
        source = registry.get("model", config.model).source
        plan.model_source = (source.distribution, source.version)
    else:
        plan.model_source = ("import", config.model)
    # what a declared plugin's real class makes of its arguments, before they are checked
    resolve_declared([plan.build(entry) for entry in attacks + defenses
                      if issubclass(entry.cls, Declared)])
    for entry in attacks + defenses:
        check_arguments(plan, entry)
    plan.cells = [
        Cell(defense, attack, ThreatModel(norm, value), split)
        for defense in defenses for split in splits for attack in attacks
        for norm in attack.cls.norms if norm in eps for value in eps[norm]
    ]
    if not plan.cells:
        raise UsageError("the selected attacks and ε give no cell to run")
    if config.cascade:  # stable: within a rank, the order above
        plan.left_out = randomized_version(plan.cells)
        plan.cells = [cell for cell in plan.cells
                      if not any(cell is out for out in plan.left_out)]

        def rank(cell: Cell) -> tuple[int, int]:
            assert cell.attack is not None  # every cell of a plan names its attack
            return defenses.index(cell.defense), cascade_rank(cell.attack, cell.defense)

        plan.cells.sort(key=rank)
    return plan
