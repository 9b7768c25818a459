"""The matrix: datasets × models × defenses × attacks × threat models, one result row a cell.

``run_matrix`` is the Python API behind ``bench run``. It validates everything before writing
anything, trains (or loads from the cache) each defended model once, then runs its cells and
rewrites the results files as each cell ends.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from platformdirs import user_cache_dir
from rich.console import Console
from torch import nn

from .adversarial_training import plot_training_curves
from .attack import Attack
from .bounds import applicable_method, certify, unsupported_reason
from .data import Dataset, Split
from .defense import Defense, TrainContext, TrainSettings
from .errors import BenchError, UsageError
from .evaluate import CellOutcome, attack_cell, is_randomized, predict
from .figures import eps_sweep_figures
from .leaderboard import to_markdown
from .models import ImportedModel, ModelPlugin
from .pictures import cell_pictures
from .plugins import load_registry, one_line
from .presets import Preset, get_preset
from .progress import RunProgress
from .registry import Entry, Registry
from .results import (
    SCHEMA_VERSION,
    to_frame,
    wilson_interval,
    write_atomic,
    write_json,
    write_results,
)
from .sanity import cell_flags, defense_flags, zero_gradient_fraction
from .smoothing import certified_accuracy, plot_certified_accuracy
from .threat import NORMS, ThreatModel
from .training import ModelCache, content_key, training_steps

SPLIT_CHOICES = ("test", "train", "both")
CERTIFIER = "crown-ibp"  # CROWN back-substitution over IBP intermediate bounds


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
    eot_samples: int = 8  # gradient draws per step against a randomized defended model


WORST_CASE = "worst-case"


@dataclass
class Cell:
    """One cell; ``attack`` is None for the per-sample worst case over a group of cells."""

    defense: Entry
    attack: Entry | None
    threat: ThreatModel
    split: str

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

    def build(self, entry: Entry) -> Any:
        """An attack or defense instance, with the preset's arguments for it."""
        return entry.cls(**self.preset.options_for(entry.name))


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
    """ε values per norm: the dataset's defaults for every norm an attack supports, overridden
    by the request. A requested norm no selected attack supports is a usage error."""
    supported = {norm for entry in attacks for norm in entry.cls.norms}
    eps = {norm: [float(dataset.default_eps[norm])] for norm in sorted(supported)
           if norm in dataset.default_eps}
    for norm, values in (requested or {}).items():
        if norm not in NORMS:
            raise UsageError(f"--eps: unknown norm {norm!r}; choose among {', '.join(NORMS)}")
        if norm not in supported:
            raise UsageError(f"--eps {norm}: none of the selected attacks supports {norm} "
                             f"(they support {', '.join(sorted(supported)) or 'nothing'})")
        values = [float(v) for v in values]
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise UsageError(f"--eps {norm}: ε must be finite numbers >= 0, got {values}")
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
    if mode not in ("random", "least-likely") and not (
            mode.isdigit() and int(mode) < dataset.num_classes):
        raise UsageError(f"--targeted {mode!r}: choose random, least-likely or a class index "
                         f"0..{dataset.num_classes - 1}")
    capable = [entry for entry in attacks if entry.cls.targeted]
    if config.attacks != "all" and len(capable) < len(attacks):
        names = ", ".join(e.name for e in attacks if not e.cls.targeted)
        raise UsageError(f"--targeted: {names} cannot run targeted; drop it from --attacks")
    if not capable:
        raise UsageError("--targeted: none of the selected attacks supports targets")
    return capable


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


def build_plan(config: RunConfig, registry: Registry) -> Plan:
    """Resolve and check every input; raises UsageError/BenchError before anything is written."""
    preset = get_preset(config.preset)
    if config.split not in SPLIT_CHOICES:
        raise UsageError(f"--split {config.split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    for option in ("n_eval", "n_train", "epochs"):
        value = getattr(config, option)
        if value is not None and value <= 0:
            raise UsageError(f"--{option.replace('_', '-')} must be a positive integer, "
                             f"got {value}")
    for option in ("batch_size", "eot_samples"):
        if getattr(config, option) <= 0:
            raise UsageError(f"--{option.replace('_', '-')} must be a positive integer, "
                             f"got {getattr(config, option)}")
    device = resolve_device(config.device)
    dataset = registry.get("dataset", config.dataset).cls()
    model_plugin = resolve_model(registry, config.model)
    defenses = registry.resolve("defense", config.defenses)
    attacks = targeted_attacks(registry.resolve("attack", config.attacks), config, dataset)
    eps = resolve_eps(config.eps, attacks, dataset)

    full_train = dataset.load("train", config.data_root)
    n_train = config.n_train or preset.n_train or len(full_train)
    if n_train > len(full_train):
        raise UsageError(f"--n-train {n_train} exceeds the {len(full_train)} training samples")
    train = full_train.subset(sample_index(len(full_train), n_train, config.seed))
    n_eval = config.n_eval or preset.n_eval
    splits = ["test", "train"] if config.split == "both" else [config.split]
    evaluation, hashes = {}, {}
    for split in splits:
        source = full_train if split == "train" else dataset.load("test", config.data_root)
        if n_eval > len(source):
            raise UsageError(f"--n-eval {n_eval} exceeds the {len(source)} samples of the "
                             f"{split} split")
        index = sample_index(len(source), n_eval, config.seed + 1)
        evaluation[split], hashes[split] = source.subset(index), index_hash(index)
    settings = {entry.name: TrainSettings(epochs=config.epochs or preset.epochs_for(entry.name),
                                          n_train=n_train) for entry in defenses}
    plan = Plan(config, dataset, model_plugin, defenses, attacks, eps, device, train,
                evaluation, hashes, settings, preset)
    plan.cells = [
        Cell(defense, attack, ThreatModel(norm, value), split)
        for defense in defenses for split in splits for attack in attacks
        for norm in attack.cls.norms if norm in eps for value in eps[norm]
    ]
    if not plan.cells:
        raise UsageError("the selected attacks and ε give no cell to run")
    return plan


RADIUS_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def reseed(model: nn.Module, seed: int) -> None:
    """Restart a randomized model's noise (if it offers ``reseed``), so that each cell draws the
    same noise whether it runs in one go or after a resume."""
    restart = getattr(model, "reseed", None)
    if callable(restart):
        restart(seed)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a plain RuntimeError)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def targeted_success(outcome: CellOutcome, targets: torch.Tensor) -> float:
    """Among attacked samples (correct, target not their label): fraction sent to the target."""
    attacked = outcome.clean_correct & (targets != outcome.labels)
    hits = (outcome.adv_pred == targets) & attacked
    return float(hits.sum()) / max(1, int(attacked.sum()))


def config_record(config: RunConfig) -> dict[str, Any]:
    """The config as the manifest stores it (JSON types); ``out`` and ``resume`` excluded."""
    record = {key: (str(value) if isinstance(value, Path) else value)
              for key, value in dataclasses.asdict(config).items()}
    return json.loads(json.dumps({k: v for k, v in record.items()
                                  if k not in ("out", "resume")}, default=str))


def prepare_out(out: Path, config: RunConfig) -> bool:
    """Create the run folder, refusing an unwritable one before any work is done. A non-empty
    folder is resumed when asked to, or when it holds a run of the same config (the same
    command started again); anything else there is refused. Returns whether to resume."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        manifest_path = out / "manifest.json"
        if not out.is_dir() or not manifest_path.is_file():
            raise UsageError(f"--out {out}: exists and is not an empty folder or a bench run; "
                             "choose a new one")
        try:
            previous = json.loads(manifest_path.read_text()).get("config")
        except (OSError, ValueError) as exc:
            raise UsageError(f"--out {out}: unreadable manifest.json ({exc})") from exc
        if config.resume or previous == config_record(config):
            return True
        raise UsageError(f"--out {out}: holds a run with another configuration; choose a new "
                         "folder, or resume it with: bench run --resume " + str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror}); "
                         "choose a writable folder") from exc
    return False


Previous = dict[str, tuple[dict[str, Any], CellOutcome]]


def load_previous(out: Path) -> Previous:
    """Finished cells of an interrupted run, by cell key: their rows and per-sample outcomes.
    Cells that raised are not reused (they run again); worst-case rows are recomputed."""
    results, samples = out / "results.parquet", out / "samples.parquet"
    if not results.is_file() or not samples.is_file():
        return {}
    try:
        rows, per_sample = pd.read_parquet(results), pd.read_parquet(samples)
    except Exception:  # a file cut by a crash is never trusted: those cells run again
        return {}
    previous: Previous = {}
    for key, part in per_sample.groupby("cell_key", sort=False):
        match = rows[(rows["cell_key"] == key) & (rows["status"] != "error")
                     & (rows["attack"] != WORST_CASE)]
        if len(match) != 1:
            continue
        part = part.sort_values("sample")
        outcome = CellOutcome(
            torch.tensor(part["clean_correct"].to_numpy()),
            torch.tensor(part["adv_pred"].to_numpy()), torch.tensor(part["label"].to_numpy()),
            torch.tensor(part["queries"].to_numpy()))
        previous[key] = (match.iloc[0].to_dict(), outcome)
    return previous


def default_out() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def versions(registry: Registry) -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "advbench": dist_version("advbench")}
    for kind_entries in registry.entries.values():
        for entry in kind_entries.values():
            found[entry.source.distribution] = entry.source.version
    return found


def manifest(plan: Plan, registry: Registry, started: str) -> dict[str, Any]:
    config = config_record(plan.config)
    return {
        "schema_version": SCHEMA_VERSION, "started": started, "command": sys.argv,
        "config": config, "seed": plan.config.seed, "device": str(plan.device),
        "dataset": plan.dataset.name, "model": plan.model_plugin.name,
        "training": {name: dataclasses.asdict(settings)
                     for name, settings in plan.settings.items()}, "eps": plan.eps,
        "samples": {split: {"n": len(data), "sha256": plan.sample_hashes[split]}
                    for split, data in plan.evaluation.items()},
        "versions": versions(registry),
        "plugin_failures": [f"{f.source}: {f.error}" for f in registry.failures],
        "cells": len(plan.cells),
    }


@dataclass
class Defended:
    """A defended model ready to attack, with what every cell of it shares."""

    model: nn.Module
    clean_pred: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    eot_samples: int
    certified: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)
    certifier: str = ""


class Runner:
    """Executes a plan: trains each defense once, runs its cells, writes as it goes."""

    def __init__(self, plan: Plan, registry: Registry, user_model: nn.Module | None,
                 progress: RunProgress, out: Path | None, previous: Previous | None = None
                 ) -> None:
        self.plan, self.registry, self.user_model = plan, registry, user_model
        self.progress, self.out, self.previous = progress, out, previous or {}
        cache_root = plan.config.cache_dir or Path(user_cache_dir("advbench")) / "models"
        self.cache = ModelCache(Path(cache_root))
        self.rows: list[dict[str, Any]] = []
        self.samples: list[pd.DataFrame] = []
        self.histories: dict[str, dict[str, Any]] = {}
        self.attack_pictures: list[Path] = []
        self.smoothing_curves: dict[str, dict[str, list[float]]] = {}

    def model_parts(self, defense: Defense) -> dict[str, Any]:
        plan = self.plan
        return {"dataset": plan.dataset.name, "model": plan.model_plugin.name,
                "defense": type(defense).name, "defense_config": defense.config(),
                "training": dataclasses.asdict(plan.settings[type(defense).name]),
                "seed": plan.config.seed,
                "train_sample": index_hash(torch.arange(len(plan.train))), "format": 1}

    def defended_model(self, defense: Defense) -> nn.Module:
        """Train (or load from the cache) the model behind ``defense`` and wrap it."""
        plan = self.plan
        torch.manual_seed(plan.config.seed)
        if self.user_model is not None:
            model = copy.deepcopy(self.user_model).to(plan.device)
        else:
            model = plan.model_plugin.build(plan.dataset.shape, plan.dataset.num_classes)
            model = model.to(plan.device)
        parts = self.model_parts(defense)
        key = content_key(parts)
        use_cache = self.user_model is None
        history_path = self.cache.path(key).with_suffix(".history.json")
        if use_cache and self.cache.load(key, parts, model):
            self.progress.log(f"{type(defense).name}: loaded cached model {key}")
            if history_path.is_file():
                self.histories[type(defense).name] = json.loads(history_path.read_text())
        else:
            settings = plan.settings[type(defense).name]
            steps = training_steps(len(plan.train), settings.batch_size, settings.epochs)
            self.progress.step(f"train {type(defense).name}", steps)
            ctx = TrainContext(settings, plan.device, plan.config.seed,
                               pretrained=self.user_model is not None,
                               on_batch=self.progress.advance)
            model = defense.fit(model, plan.train, ctx)
            history = getattr(defense, "history", None)
            if history is not None:
                self.histories[type(defense).name] = history.to_dict()
            if use_cache:
                self.cache.save(key, parts, model)
                if history is not None:
                    write_json(history_path, history.to_dict())
        model.eval()
        return defense.wrap(model).eval()

    def cell_key(self, cell: Cell, attack_config: str, defense_config: str) -> str:
        """Hash of everything that determines a cell's numbers (the model follows from them)."""
        plan = self.plan
        return content_key({
            "dataset": plan.dataset.name, "model": plan.model_plugin.name,
            "defense": cell.defense.name, "attack": cell.attack_name,
            "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
            "seed": plan.config.seed, "attack_config": attack_config,
            "defense_config": defense_config, "targeted": plan.config.targeted or "",
            "sample": plan.sample_hashes[cell.split],
            "training": plan.settings[cell.defense.name],
            "batch_size": plan.config.batch_size})

    def row(self, cell: Cell, attack: Attack | None, defense: Defense | None,
            outcome: CellOutcome | None, seconds: float, error: str | None) -> dict[str, Any]:
        plan = self.plan
        data = plan.evaluation[cell.split]
        row: dict[str, Any] = {
            "dataset": plan.dataset.name, "model": plan.model_plugin.name,
            "defense": cell.defense.name, "attack": cell.attack_name,
            "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
            "n_samples": len(data), "seed": plan.config.seed,
            "attack_config": json.dumps(attack.config() if attack else {}, sort_keys=True),
            "defense_config": json.dumps(defense.config() if defense else {}, sort_keys=True),
            "seconds": round(seconds, 3), "schema_version": SCHEMA_VERSION,
            "targeted": plan.config.targeted or "",
        }
        row["cell_key"] = self.cell_key(cell, row["attack_config"], row["defense_config"])
        nan = float("nan")
        row.update(clean_accuracy=nan, clean_accuracy_ci_low=nan, clean_accuracy_ci_high=nan,
                   robust_accuracy=nan, robust_accuracy_ci_low=nan, robust_accuracy_ci_high=nan,
                   attack_success_rate=nan, targeted_success_rate=nan, queries_mean=nan,
                   queries_success_mean=nan, queries_success_median=nan,
                   query_budget=getattr(attack, "max_queries", None) or nan,
                   broken_by="", eot_samples=1, batch_size=plan.config.batch_size,
                   certified_accuracy=nan,
                   certified_accuracy_ci_low=nan, certified_accuracy_ci_high=nan, certifier="",
                   certified_broken=nan, abstain_rate=nan)
        if outcome is not None:
            n = len(data)
            clean, robust = int(outcome.clean_correct.sum()), int(outcome.robust.sum())
            row["clean_accuracy"] = clean / n
            low, high = wilson_interval(clean, n)
            row.update(clean_accuracy_ci_low=low, clean_accuracy_ci_high=high)
        if outcome is not None and outcome.invalid_reason is None:
            attacked = outcome.clean_correct
            row["robust_accuracy"] = robust / n
            low, high = wilson_interval(robust, n)
            row.update(robust_accuracy_ci_low=low, robust_accuracy_ci_high=high)
            row["attack_success_rate"] = (clean - robust) / clean if clean else nan
            row["queries_mean"] = float(outcome.queries[attacked].float().mean()) if clean else nan
            fooled = outcome.queries[attacked & ~outcome.adv_correct].float()
            if len(fooled):
                row.update(queries_success_mean=float(fooled.mean()),
                           queries_success_median=float(fooled.median()))
        reason = error or (outcome.invalid_reason if outcome else None)
        row["valid"] = reason is None
        row["status"] = "ok" if reason is None else ("error" if error else "invalid")
        row["invalid_reason"] = reason or ""
        return row

    def keep(self, row: dict[str, Any], outcome: CellOutcome | None) -> None:
        """Append a row (and its per-sample outcome) and rewrite the results files."""
        self.rows.append(row)
        if outcome is not None and row["valid"]:
            self.samples.append(pd.DataFrame({
                "cell_key": row["cell_key"], "sample": range(len(outcome.labels)),
                "clean_correct": outcome.clean_correct.numpy(),
                "adv_pred": outcome.adv_pred.numpy(), "label": outcome.labels.numpy(),
                "queries": outcome.queries.numpy(), "robust": outcome.robust.numpy()}))
        if self.out is not None:  # samples first: a row on disk always has its samples
            samples = pd.concat(self.samples, ignore_index=True) if self.samples else None
            if samples is not None:
                write_atomic(self.out / "samples.parquet",
                             lambda p: samples.to_parquet(p, index=False))
            write_results(self.out, self.rows)

    def record(self, row: dict[str, Any], outcome: CellOutcome | None = None) -> None:
        """Keep the row of a planned cell and advance the overall bar."""
        self.keep(row, outcome)
        self.progress.cell_done()

    def reused(self, cell: Cell, defense: Defense) -> tuple[dict, CellOutcome] | None:
        """The finished result of ``cell`` from the interrupted run being resumed, if any."""
        if not self.previous:
            return None
        try:
            attack_config = json.dumps(self.plan.build(cell.attack).config(), sort_keys=True)
        except Exception:  # the attack fails to build: let the cell run and record why
            return None
        key = self.cell_key(cell, attack_config, json.dumps(defense.config(), sort_keys=True))
        return self.previous.get(key)

    def defended_state(self, defense: Defense) -> Defended:
        """Train or load the defended model; its clean predictions, targets and randomness."""
        plan, config = self.plan, self.plan.config
        model = self.defended_model(defense)
        reseed(model, config.seed)
        clean_pred = {split: predict(model, data.x, config.batch_size, plan.device)
                      for split, data in plan.evaluation.items()}
        targets = {split: choose_targets(config.targeted, model, data, plan.dataset.num_classes,
                                         config.batch_size, plan.device, config.seed)
                   for split, data in plan.evaluation.items()} if config.targeted else {}
        probe = next(iter(plan.evaluation.values())).x[:16].to(plan.device)
        randomized = is_randomized(model, probe)
        if randomized:
            self.progress.log(f"{type(defense).name}: randomized model detected, gradient "
                              f"attacks use EOT over {config.eot_samples} draws")
        state = Defended(model, clean_pred, targets, config.eot_samples if randomized else 1)
        if callable(getattr(model, "certify", None)):
            self.certify_smoothed(type(defense).name, state)
        if unsupported_reason(model) is None and not randomized:
            state.certifier = applicable_method(model, CERTIFIER)
            for split, data in plan.evaluation.items():
                for eps in plan.eps.get("linf", []):
                    certified = certify(model, data.x.to(plan.device), data.y.to(plan.device),
                                        eps, CERTIFIER)
                    state.certified[(split, eps)] = certified.cpu()
        return state

    def certify_smoothed(self, defense: str, state: Defended) -> None:
        """CERTIFY of a randomized-smoothing model, once per split: certified samples at each
        L2 ε of the run, and the curve of certified accuracy against the radius."""
        plan = self.plan
        for split, data in plan.evaluation.items():
            reseed(state.model, plan.config.seed + 3)
            labels, radii = state.model.certify(data.x.to(plan.device))
            labels, radii = labels.cpu(), radii.cpu()
            for eps in plan.eps.get("l2", []):
                state.certified[(split, eps)] = (labels == data.y) & (radii >= eps)
            accuracies = certified_accuracy(labels, radii, data.y, RADIUS_GRID)
            self.smoothing_curves[f"{defense}_{split}"] = [float(a) for a in accuracies]
        state.certifier = "randomized-smoothing"

    def add_certification(self, row: dict[str, Any], cell: Cell, outcome: CellOutcome | None,
                          state: Defended) -> None:
        """Certified accuracy at the cell's ε (L∞ by bounds, L2 by smoothing), and for the
        deterministic certificate the cross-check that must always hold: no certified sample
        is broken by an attack. (Smoothing's certificate holds with probability 1 − α for the
        smoothed classifier, whose noisy PREDICT may still abstain: not cross-checked.)"""
        certified = state.certified.get((cell.split, cell.threat.eps))
        expected = "l2" if state.certifier == "randomized-smoothing" else "linf"
        if cell.threat.norm != expected or certified is None:
            return
        n, count = len(certified), int(certified.sum())
        low, high = wilson_interval(count, n)
        row.update(certified_accuracy=count / n, certified_accuracy_ci_low=low,
                   certified_accuracy_ci_high=high, certifier=state.certifier)
        if outcome is not None and row["valid"] and expected == "linf":
            row["certified_broken"] = int((certified & ~outcome.robust).sum())

    def run_cell(self, cell: Cell, defense: Defense, state: Defended
                 ) -> tuple[dict[str, Any], CellOutcome | None]:
        plan = self.plan
        data = plan.evaluation[cell.split]
        clean_pred = state.clean_pred[cell.split]
        self.progress.step(f"{cell.defense.name} × {cell.attack_name} {cell.threat.norm} "
                           f"ε={cell.threat.eps:g} ({cell.split})",
                           int((clean_pred == data.y).sum()))
        reseed(state.model, int(content_key([cell.defense.name, cell.attack_name,
                                             cell.threat.norm, cell.threat.eps,
                                             cell.split])[:8], 16))
        started = time.perf_counter()
        attack, outcome, error = None, None, None
        batch_size = plan.config.batch_size
        while outcome is None and error is None:
            try:
                attack = self.plan.build(cell.attack)
                outcome = attack_cell(
                    state.model, attack, data, clean_pred, cell.threat, batch_size=batch_size,
                    device=plan.device, seed=plan.config.seed,
                    targets=state.targets.get(cell.split), eot_samples=state.eot_samples,
                    on_batch=self.progress.advance)
            except Exception as exc:
                if is_out_of_memory(exc) and batch_size > 1:
                    batch_size //= 2
                    self.progress.log(f"out of memory: retrying the cell with batches of "
                                      f"{batch_size}")
                    continue
                self.log_error(f"cell {cell.defense.name} × {cell.attack_name}", exc)
                error = f"attack raised {one_line(exc)}"
        row = self.row(cell, attack, defense, outcome, time.perf_counter() - started, error)
        if outcome is not None and error is None:
            self.attack_figures(attack, cell, state, data)
        row["eot_samples"], row["batch_size"] = state.eot_samples, batch_size
        row["abstain_rate"] = float((clean_pred == -1).float().mean())
        self.add_certification(row, cell, outcome, state)
        if cell.split in state.targets and outcome is not None and row["valid"]:
            row["targeted_success_rate"] = targeted_success(outcome, state.targets[cell.split])
        return row, (outcome if error is None else None)

    def attack_figures(self, attack: Attack, cell: Cell, state: Defended, data: Split) -> None:
        """Pictures of a valid cell for a few correctly classified images: clean against
        adversarial examples, the ε grid of one image (gradient attacks: the others would
        spend their whole budget again per ε), and the attack's own figures, if it draws any
        (``figures(model, x, y, stem) -> [paths]``). A figure never costs a result."""
        if self.out is None:
            return
        plan = self.plan
        correct = torch.nonzero(state.clean_pred[cell.split] == data.y).flatten()[:6]
        x, y = data.x[correct].to(plan.device), data.y[correct].to(plan.device)
        targets = state.targets.get(cell.split)
        stem = (self.out / "figures" / f"{cell.attack_name}_{cell.defense.name}_{cell.split}_"
                f"{cell.threat.norm}_{cell.threat.eps:g}")
        try:
            self.attack_pictures += cell_pictures(
                state.model, attack, x, y, cell.threat, plan.dataset.classes, stem,
                plan.config.seed, eps_grid=attack.access == "gradient",
                eot_samples=state.eot_samples,
                targets=None if targets is None else targets[correct].to(plan.device))
            draw = getattr(attack, "figures", None)
            if callable(draw):
                self.attack_pictures += draw(state.model, x, y, stem)
        except Exception as exc:
            self.log_error(f"figures of {cell.attack_name}", exc)

    def run_defense(self, defense_entry: Entry, cells: list[Cell]) -> None:
        """Run a defense's cells, training its model only if some cell is not already done."""
        failure, defense, state = None, None, None
        try:
            defense = self.plan.build(defense_entry)
        except Exception as exc:
            self.log_error(f"defense {defense_entry.name}", exc)
            failure = f"defense failed: {one_line(exc)}"
        finished: list[tuple[Cell, CellOutcome]] = []
        first_row = len(self.rows)
        for cell in cells:
            done = self.reused(cell, defense) if defense is not None else None
            if done is None and failure is None and state is None:
                try:
                    state = self.defended_state(defense)
                except Exception as exc:
                    self.log_error(f"defense {defense_entry.name}", exc)
                    failure = f"defense failed: {one_line(exc)}"
            if done is not None:
                row, outcome = done
            elif failure is not None:
                row, outcome = self.row(cell, None, None, None, 0.0, failure), None
            else:
                row, outcome = self.run_cell(cell, defense, state)
            self.record(row, outcome)
            if outcome is not None and row["valid"]:
                finished.append((cell, outcome))
        if defense is not None:
            self.record_worst_cases(defense, finished, state)
            self.flag(self.rows[first_row:], state)
            if self.out is not None:
                write_results(self.out, self.rows)

    def flag(self, rows: list[dict[str, Any]], state: Defended | None) -> None:
        """Run the sanity battery over one defense's rows and write its flags into them."""
        if state is not None:
            data = next(iter(self.plan.evaluation.values()))
            zero = zero_gradient_fraction(state.model, data, self.plan.device)
            eot = state.eot_samples
        else:  # every cell was resumed: the battery's inputs were recorded with them
            zero = float(rows[0].get("zero_grad_fraction", 0.0)) if rows else 0.0
            eot = int(rows[0].get("eot_samples", 1)) if rows else 1
        attacks = self.registry.entries["attack"]
        checked = [row for row in rows if row["valid"] and row["attack"] in attacks]
        cells = pd.DataFrame([{**row, "access": attacks[row["attack"]].cls.access,
                               "single_step": bool(attacks[row["attack"]].cls.single_step)}
                              for row in checked])
        found = cell_flags(cells) if checked else {}
        per_row = {id(row): found.get(i, []) for i, row in enumerate(checked)}
        common = defense_flags(zero, eot)
        for row in rows:
            row["zero_grad_fraction"], row["eot_samples"] = zero, eot
            row["flags"] = "; ".join(common + per_row.get(id(row), []))

    def record_worst_cases(self, defense: Defense, finished: list[tuple[Cell, CellOutcome]],
                           state: Defended | None) -> None:
        """Per split, norm and ε with two attacks or more: a sample is robust only if every
        valid attack failed on it. ``broken_by`` counts the samples each attack broke."""
        groups: dict[tuple[str, str, float], list[tuple[Cell, CellOutcome]]] = {}
        for cell, outcome in finished:
            key = (cell.split, cell.threat.norm, cell.threat.eps)
            groups.setdefault(key, []).append((cell, outcome))
        for (split, _, _), members in groups.items():
            if len(members) < 2:
                continue
            first_cell, first = members[0]
            broken_by_any = torch.stack([~o.robust for _, o in members]).any(dim=0)
            # The worst case's "prediction" is wrong wherever some attack fooled the model.
            worst_pred = torch.where(broken_by_any, -1, first.labels)
            combined = CellOutcome(first.clean_correct, worst_pred, first.labels,
                                   torch.stack([o.queries for _, o in members]).sum(dim=0))
            broken = {cell.attack_name: int((o.clean_correct & ~o.adv_correct).sum())
                      for cell, o in members}
            cell = Cell(first_cell.defense, None, first_cell.threat, split)
            row = self.row(cell, None, defense, combined, 0.0, None)
            row["broken_by"] = json.dumps(broken, sort_keys=True)
            if state is not None:
                self.add_certification(row, cell, combined, state)
                row["abstain_rate"] = float((state.clean_pred[split] == -1).float().mean())
            self.keep(row, combined)

    def log_error(self, what: str, exc: BaseException) -> None:
        self.progress.log(f"[red]{what} failed: {one_line(exc)}[/red]")
        if self.out is not None:
            with open(self.out / "errors.log", "a") as handle:
                handle.write(f"== {what}\n{''.join(traceback.format_exception(exc))}\n")

    def figures(self, folder: Path) -> list[Path]:
        """Training curves of the defenses that kept a history, and smoothing's certified
        accuracy against the radius."""
        written = [plot_training_curves(history, folder / f"training_{name}.png")
                   for name, history in sorted(self.histories.items())]
        written += [plot_certified_accuracy(RADIUS_GRID, curve, folder / f"certified_{name}.png")
                    for name, curve in sorted(self.smoothing_curves.items())]
        return written + self.attack_pictures

    def run(self) -> pd.DataFrame:
        self.progress.overall(len(self.plan.cells))
        for defense_entry in self.plan.defenses:
            cells = [cell for cell in self.plan.cells if cell.defense is defense_entry]
            self.run_defense(defense_entry, cells)
        return to_frame(self.rows)


def run_matrix(
    config: RunConfig | None = None,
    *,
    model: nn.Module | str | None = None,
    registry: Registry | None = None,
    progress: bool = False,
    console: Console | None = None,
    **overrides: Any,
) -> pd.DataFrame:
    """Run the attack × defense matrix and return one row per cell as a DataFrame.

    ``model``: your own trained ``nn.Module`` (logits out, inputs in [0, 1]) for ``dataset``;
    the defense ``none`` evaluates it as it is, training-time defenses fine-tune a copy.
    ``model`` may also be a model plugin name or ``package.module:factory`` string.
    Keyword ``overrides`` set fields of :class:`RunConfig`, e.g. ``attacks="fgsm"``.
    Files are written only when ``out`` is given.
    """
    if isinstance(model, str):
        overrides["model"], model = model, None
    config = dataclasses.replace(config or RunConfig(), **overrides)
    if model is not None and config.model == RunConfig.model:
        config = dataclasses.replace(config, model=type(model).__name__)
    registry = registry or load_registry(strict=config.strict_plugins)
    if model is not None:
        registry = registry_with_user_model(registry, config.model)
    plan = build_plan(config, registry)
    out = Path(config.out) if config.out is not None else None
    previous = load_previous(out) if out is not None and prepare_out(out, config) else {}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    run_manifest = manifest(plan, registry, started)
    if out is not None:
        write_json(out / "manifest.json", run_manifest)
    wall = time.perf_counter()
    with RunProgress(progress, console) as bars:
        runner = Runner(plan, registry, model, bars, out, previous)
        frame = runner.run()
    run_manifest["wall_seconds"] = round(time.perf_counter() - wall, 1)
    if out is not None:
        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        written = eps_sweep_figures(frame, figures) + runner.figures(figures)
        run_manifest["figures"] = [str(p.relative_to(out)) for p in written]
        write_json(out / "manifest.json", run_manifest)
        text = to_markdown(frame, run_manifest)
        write_atomic(out / "leaderboard.md", lambda p: p.write_text(text))
    frame.attrs["manifest"] = run_manifest
    return frame


class UserModel(ModelPlugin):
    """Stands for a module the user passed in; never built (the runner copies the module)."""

    description = "a trained torch.nn.Module passed to run_matrix"

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise BenchError("a user-supplied model is copied, not built")


def registry_with_user_model(registry: Registry, name: str) -> Registry:
    """A copy of ``registry`` where ``name`` resolves to the user's module."""
    extended = copy.copy(registry)
    extended.entries = {kind: dict(entries) for kind, entries in registry.entries.items()}
    cls = type("UserModel", (UserModel,), {"name": name})
    from .registry import Source

    extended.entries["model"][name] = Entry(name, "model", cls, Source("user", "local", "-"))
    return extended


def evaluate_model(model: nn.Module, dataset: str = "fashion-mnist", **overrides: Any
                   ) -> pd.DataFrame:
    """Evaluate your own trained model against every attack (no defense): the commonest ask."""
    overrides.setdefault("defenses", "none")
    return run_matrix(model=model, dataset=dataset, **overrides)
