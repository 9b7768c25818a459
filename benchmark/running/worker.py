"""The computing side of a run: train (or load) defended models and run attack cells.

A :class:`Worker` writes nothing into the run folder and keeps no results: it returns them, so
it runs the same in the driver's process, in a pool of processes or on a Ray cluster
(``advbench.running.executors``), and the driver alone records what comes back.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advbench.algorithms.bounds import applicable_method, certify, unsupported_reason
from advbench.algorithms.smoothing import certified_accuracy
from advbench.algorithms.training import training_steps
from advbench.attack import Attack
from advbench.data import Split
from advbench.defense import (
    Certifier,
    DatasetInfo,
    Defense,
    Reseedable,
    TrainContext,
    bpda_surrogate,
    declared_surrogate,
)
from advbench.oracle import Oracle
from advbench.plugin_system.loader import one_line
from advbench.reporting.pictures import cell_stem
from advbench.reporting.results import (
    RADIUS_GRID,
    SCHEMA_VERSION,
    blank_row,
    radius_columns,
    wilson_interval,
    write_atomic,
)
from advbench.reporting.sanity import ZERO_GRADIENT_LIMIT, zero_gradient_fraction
from advbench.running.cell_cache import code_version
from advbench.running.evaluate import (
    CellOutcome,
    attack_cell,
    either_fooled,
    has_own_predict,
    is_randomized,
    predict,
    prediction_draws,
)
from advbench.running.guard import Pristine, Seal, SealBroken, fingerprint, listed
from advbench.running.model_cache import (
    ModelCache,
    cache_roots,
    content_key,
    data_fingerprint,
    read_history,
    tensor_hash,
)
from advbench.running.plan import Cell, Plan, choose_targets
from advbench.running.plugin_code import plugin_code
from advbench.running.progress import RunProgress
from advbench.threat import ThreatModel

CERTIFIER = "crown-ibp"  # CROWN back-substitution over IBP intermediate bounds


def is_bound_certificate(certifier: str) -> bool:
    """Whether rows name the harness's own bound-propagation certificate (``ibp``,
    ``crown-ibp`` or ``ibp+crown-ibp``: ``applicable_method``'s names), which is deterministic,
    so no attack may ever break a sample it certified (the cross-check)."""
    return certifier == "ibp" or certifier.endswith(CERTIFIER)


def reseed(model: nn.Module, seed: int) -> None:
    """Restart a randomized model's noise (if it offers ``reseed``), so that each cell draws the
    same noise whether it runs in one go or after a resume."""
    if isinstance(model, Reseedable):
        model.reseed(seed)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a plain RuntimeError)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def targeted_success(outcome: CellOutcome, targets: torch.Tensor) -> float:
    """Among attacked samples (correct, target not their label): fraction sent to the target."""
    attacked = outcome.clean_correct & (targets != outcome.labels)
    hits = (outcome.adv_pred == targets) & attacked
    return float(hits.sum()) / max(1, int(attacked.sum()))


def cell_seed(cell: Cell) -> int:
    """A seed of the cell alone, so its numbers do not depend on which cells ran before it."""
    return int(content_key([cell.defense.name, cell.attack_name, cell.threat.norm,
                            cell.threat.eps, cell.split])[:8], 16)


class DefenseFailed(Exception):
    """Training or preparing a defended model raised; every cell of that defense fails with it."""


@dataclass
class Defended:
    """A defended model ready to attack, with what every cell of it shares. Sent between
    processes without ``model`` (a wrapped module may hold generators): ``weights`` rebuild it."""

    model: nn.Module | None
    weights: dict[str, torch.Tensor]
    clean_pred: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    eot_samples: int
    certified: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)
    certifier: str = ""
    certified_norm: str = ""  # the norm of ``certified``'s radii
    history: dict[str, Any] | None = None  # training curves, when the defense kept them
    curves: dict[str, list[float]] = field(default_factory=dict)  # split → certified acc.
    log: list[str] = field(default_factory=list)
    seal: Seal | None = None  # the model and what its cells are graded with, sealed
    bpda: bool = False  # gradient attacks also run with the unwrapped model's gradients
    surrogate: nn.Module | None = None  # that unwrapped model, when ``bpda``
    seconds: dict[str, float] = field(default_factory=dict)  # phase → time preparing it

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "model": None, "seal": None, "surrogate": None}

    @property
    def adaptive(self) -> str:
        """How gradient attacks adapt to this defense: ``eot``, ``bpda``, both, or neither."""
        return "+".join(name for name, used in (("eot", self.eot_samples > 1),
                                                ("bpda", self.bpda)) if used)


@dataclass
class CellResult:
    """What a cell sends back: its row, its per-sample outcome, and the traceback if it raised."""

    row: dict[str, Any]
    outcome: CellOutcome | None
    trace: str | None = None
    # The attack's own figures (file name -> PNG bytes) and the traceback if drawing them
    # failed: drawn here, under the seal, so that the driver never runs an attack.
    figures: dict[str, bytes] = field(default_factory=dict)
    figures_trace: str | None = None


class Worker:
    """Trains each defended model and runs cells of one plan."""

    def __init__(self, plan: Plan, user_model: nn.Module | None,
                 progress: RunProgress | None = None) -> None:
        self.plan, self.user_model = plan, user_model
        self.progress = progress or RunProgress(False)
        self.cache = ModelCache(cache_roots(plan.config.cache_dir)[0])
        self._evaluation: Pristine | None = None
        self._train_digest: bytes | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": None, "_evaluation": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.progress = RunProgress(False)

    def model_parts(self, defense: Defense) -> dict[str, Any]:
        """Everything that shapes the trained model, hashed into its cache key: the training
        data itself (not its indices: another --data-root must retrain) and the defense's and
        the model plugin's distribution and version (a fixed bug must not load the old model)."""
        plan = self.plan
        source = next(entry.source for entry in plan.defenses if entry.cls is type(defense))
        return {"dataset": plan.dataset.name, "model": plan.model_plugin.name,
                "model_source": list(plan.model_source),
                "defense": type(defense).name,
                "defense_config": defense.resolved_training_config(self.train_context(defense)),
                "defense_source": [source.distribution, source.version],
                "defense_code": plugin_code(type(defense)),  # an edited, unversioned defense
                "training": dataclasses.asdict(plan.settings[type(defense).name]),
                "seed": plan.config.seed, "train_data": data_fingerprint(plan.train),
                "format": 2}

    def train_context(self, defense: Defense) -> TrainContext:
        """What ``defense`` trains with: the run's settings, seed, threat models and dataset."""
        plan = self.plan
        threats = tuple(ThreatModel(norm, eps) for norm, values in plan.eps.items()
                        for eps in values)
        return TrainContext(plan.settings[type(defense).name], plan.device, plan.config.seed,
                            pretrained=self.user_model is not None,
                            on_batch=self.progress.advance, threats=threats,
                            dataset=DatasetInfo.of(plan.dataset))

    def base_model(self) -> nn.Module:
        """A fresh, untrained copy of the run's model (the user's module, or the plugin's)."""
        plan = self.plan
        torch.manual_seed(plan.config.seed)
        if self.user_model is not None:
            return copy.deepcopy(self.user_model).to(plan.device)
        model = plan.model_plugin.build(plan.dataset.shape, plan.dataset.num_classes)
        return model.to(plan.device)

    def trained_model(self, defense: Defense) -> tuple[nn.Module, dict[str, Any] | None, str]:
        """Train (or load from the cache) the model behind ``defense``: the model in eval mode,
        its training history if the defense kept one, and a line saying which it was."""
        plan = self.plan
        model = self.base_model()
        parts = self.model_parts(defense)
        key = content_key(parts)
        use_cache = self.user_model is None
        history_path = self.cache.path(key).with_suffix(".history.json")
        if use_cache and not plan.config.fresh and self.cache.load(key, parts, model):
            history, dropped = read_history(history_path)
            return model.eval(), history, (f"{type(defense).name}: loaded cached model {key}"
                                           + (f" ({dropped})" if dropped else ""))
        settings = plan.settings[type(defense).name]
        steps = training_steps(len(plan.train), settings.batch_size, settings.epochs)
        self.progress.step(f"train {type(defense).name}", steps)
        ctx = self.train_context(defense)
        started = time.perf_counter()
        model = defense.fit(model, plan.train, ctx)
        kept = defense.history
        history = kept.to_dict() if kept is not None else None
        if use_cache:
            self.cache.save(key, parts, model)
            if history is not None:
                text = json.dumps(history)
                write_atomic(history_path, lambda path: path.write_text(text, encoding="utf-8"))
        return model.eval(), history, (f"{type(defense).name}: trained in "
                                       f"{time.perf_counter() - started:.0f} s")

    def defended_state(self, defense: Defense) -> Defended:
        """Train or load the defended model; its clean predictions, targets and randomness, and
        its certificates. Any failure is a :class:`DefenseFailed`."""
        try:
            return self._defended_state(defense)
        except Exception as exc:
            raise DefenseFailed(f"defense failed: {one_line(exc)}") from exc

    def evaluation(self) -> Pristine:
        """The evaluation images and labels of every split, with pristine copies taken before
        any defense or attack ran (the harness grades with these references)."""
        if self._evaluation is None:
            self._evaluation = Pristine({
                f"{what} ({split})": tensor for split, data in self.plan.evaluation.items()
                for what, tensor in (("evaluation images", data.x), ("evaluation labels",
                                                                     data.y))})
        return self._evaluation

    def check_train_data(self, when: str) -> None:
        """Training data is too large to keep a copy of: a digest shows it changed, and the
        defense fails rather than train (or let later defenses train) on altered data."""
        plan = self.plan
        digest = fingerprint([plan.train.x, plan.train.y])
        if self._train_digest is None:
            self._train_digest = digest
        elif digest != self._train_digest:
            raise RuntimeError(f"the training data was modified {when}")

    def forget(self, defense: Defense) -> None:
        """Drop a cheating defense's cached model, so that the next run fits (and fails) again
        instead of loading it."""
        path = self.cache.path(content_key(self.model_parts(defense)))
        for stale in (path, path.with_suffix(".history.json")):
            stale.unlink(missing_ok=True)

    def seal(self, state: Defended) -> Seal:
        """The state's seal, made once per defended model: its weights and buffers, and every
        tensor its cells are graded with (evaluation data, clean predictions, targets,
        certificates), so that no attack can change them for itself or for later cells."""
        if state.seal is None:
            assert state.model is not None
            own = {f"clean predictions ({split})": pred for split, pred in state.clean_pred.items()}
            own.update({f"targets ({split})": t for split, t in state.targets.items()})
            own.update({f"certified ({split}, {eps:g})": c
                        for (split, eps), c in state.certified.items()})
            state.seal = Seal(state.model, [self.evaluation(), Pristine(own)])
        return state.seal

    def _defended_state(self, defense: Defense) -> Defended:
        plan, config = self.plan, self.plan.config
        evaluation = self.evaluation()
        evaluation.restore()  # whatever ran outside a cell (e.g. a picture) changed is undone
        self.check_train_data("before this defense (by an earlier plugin)")
        started = time.perf_counter()
        base, history, line = self.trained_model(defense)
        trained = time.perf_counter()
        weights = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
        model = defense.wrap(base).eval()
        changed = evaluation.changed()
        if changed:
            evaluation.restore()
            self.forget(defense)
            raise RuntimeError(f"fit or wrap modified {listed(changed)}")
        try:
            self.check_train_data("by fit or wrap")
        except RuntimeError:
            self.forget(defense)
            raise
        probe = next(iter(plan.evaluation.values())).x[:16].to(plan.device)
        with torch.no_grad():
            if torch.isnan(model(probe)).any():  # argmax of NaN is a constant class
                raise RuntimeError("the defended model returns NaN logits on evaluation "
                                   "images: no accuracy can be graded; fix the model")
        randomized = is_randomized(model, probe)
        draws = config.eot_samples if randomized else 1  # graded predictions too (evaluate)
        reseed(model, config.seed)
        clean_pred = {split: predict(model, data.x, config.batch_size, plan.device, draws)
                      for split, data in plan.evaluation.items()}
        targets = {split: choose_targets(config.targeted, model, data, plan.dataset.num_classes,
                                         config.batch_size, plan.device, config.seed)
                   for split, data in plan.evaluation.items()} if config.targeted else {}
        state = Defended(model, weights, clean_pred, targets, draws, history=history,
                         log=[line])
        if randomized:
            state.log.append(f"{type(defense).name}: randomized model detected, gradient "
                             f"attacks use EOT over {draws} draws, predictions are graded "
                             + ("by its own predict" if has_own_predict(model) else
                                f"by the mean softmax of {draws} draws"))
        declared = declared_surrogate(defense, base)  # None: the wrapper as the identity
        if model is not base and (declared is not None or not randomized or zero_gradient_fraction(
                model, next(iter(plan.evaluation.values())), plan.device) > ZERO_GRADIENT_LIMIT):
            state.bpda, state.surrogate = True, base if declared is None else declared
            state.log.append(f"{type(defense).name}: the defense wraps its trained model, "
                             "gradient attacks also run with BPDA (" + (
                                 "the unwrapped model's" if declared is None else
                                 "its bpda_surrogate's") + " gradients)")
        state.seconds["training"] = trained - started
        certifying = time.perf_counter()
        state.seconds["preparation"] = certifying - trained
        if isinstance(model, Certifier):
            self.certify_own(state, model)
        if unsupported_reason(model) is None and not randomized:
            state.certifier = applicable_method(model, CERTIFIER)
            state.certified_norm = "linf"
            for split, data in plan.evaluation.items():
                for eps in plan.eps.get("linf", []):
                    certified = certify(model, data.x.to(plan.device), data.y.to(plan.device),
                                        eps, CERTIFIER)
                    state.certified[(split, eps)] = certified.cpu()
        state.seconds["certification"] = time.perf_counter() - certifying
        self.seal(state)
        return state

    def materialize(self, state: Defended, defense: Defense) -> Defended:
        """Give a state that crossed a process boundary its model (and its seal) back."""
        if state.model is None:
            base = self.base_model()
            base.load_state_dict(state.weights)
            state.model = defense.wrap(base.eval()).eval()
            state.surrogate = bpda_surrogate(defense, base) if state.bpda else None
        self.seal(state)
        return state

    def certify_own(self, state: Defended, model: Certifier) -> None:
        """The model's own certificate (e.g. randomized smoothing's CERTIFY), once per split:
        certified samples at each ε of the run in its norm, and the curve of certified accuracy
        against the radius. Rows name it as the model names itself."""
        plan = self.plan
        for split, data in plan.evaluation.items():
            reseed(model, plan.config.seed + 3)
            labels, radii = model.certify(data.x.to(plan.device))
            labels, radii = labels.cpu(), radii.cpu()
            for eps in plan.eps.get(model.certified_norm, []):
                state.certified[(split, eps)] = (labels == data.y) & (radii >= eps)
            accuracies = certified_accuracy(labels, radii, data.y, RADIUS_GRID)
            state.curves[split] = [float(a) for a in accuracies]
        state.certifier, state.certified_norm = model.certifier, model.certified_norm

    def cell_key(self, cell: Cell, attack_config: str, defense_config: str) -> str:
        """Hash of everything that determines a cell's numbers (the model follows from them):
        the evaluation images and labels themselves (another --data-root with as many samples
        must not reuse a cell), not only their indices; a cascade's cell that skips nothing is
        the plain cell."""
        plan = self.plan
        skipped = {"skip": content_key(list(cell.skip))} if cell.skip else {}
        return content_key({**skipped,
            "dataset": plan.dataset.name, "model": plan.model_plugin.name,
            "defense": cell.defense.name, "attack": cell.attack_name,
            "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
            "seed": plan.config.seed, "attack_config": attack_config,
            "defense_config": defense_config, "targeted": plan.config.targeted or "",
            "sample": plan.sample_hashes[cell.split],
            "data": data_fingerprint(plan.evaluation[cell.split]),
            "targets": self.targets_fingerprint(cell.split),
            "training": plan.settings[cell.defense.cls.name],
            "batch_size": plan.config.batch_size})

    def targets_fingerprint(self, split: str) -> str:
        """A hash of the targets of ``--targeted random`` or a class, which the data decide;
        least-likely targets follow from the model and the data, both already in the key."""
        config, data = self.plan.config, self.plan.evaluation[split]
        if config.targeted in (None, "least-likely"):
            return ""
        return tensor_hash(choose_targets(config.targeted, nn.Identity(), data,
                                          self.plan.dataset.num_classes, config.batch_size,
                                          torch.device("cpu"), config.seed))

    def cache_key(self, cell: Cell, defense: Defense, attack_config: str,
                  defense_config: str) -> str:
        """The cell cache's key: the run folder's cell key, and what it leaves to the run
        folder being the same: the defended model's own key (the model cache's, with a hash of
        the user's weights when they are the start), the attack's code, the draws against
        randomness, the device and bench's code."""
        assert cell.attack is not None
        model: list[Any] = [content_key(self.model_parts(defense))]
        if self.user_model is not None:
            state = self.user_model.state_dict()
            model += [type(self.user_model).__qualname__, list(state),
                      tensor_hash(*state.values())]
        attack = cell.attack.cls
        return content_key({
            "cell": self.cell_key(cell, attack_config, defense_config), "model": model,
            "attack_class": f"{attack.__module__}.{attack.__qualname__}",
            "attack_source": [cell.attack.source.distribution, cell.attack.source.version],
            "attack_code": plugin_code(attack),  # an editable install keeps its version
            "eot_samples": self.plan.config.eot_samples, "device": str(self.plan.device),
            "bench": code_version(), "format": 1})

    def row(self, cell: Cell, attack: Attack | None, defense: Defense | None,
            outcome: CellOutcome | None, seconds: float, error: str | None) -> dict[str, Any]:
        plan = self.plan
        data = plan.evaluation[cell.split]
        row = blank_row()
        row.update({
            "dataset": plan.dataset.name, "model": plan.model_plugin.name,
            "defense": cell.defense.name, "attack": cell.attack_name,
            "norm": cell.threat.norm, "eps": cell.threat.eps, "split": cell.split,
            "n_samples": len(data), "seed": plan.config.seed,
            "attack_config": json.dumps(attack.config() if attack else {}, sort_keys=True),
            "defense_config": json.dumps(defense.config() if defense else {}, sort_keys=True),
            "seconds": round(seconds, 3), "schema_version": SCHEMA_VERSION,
            "targeted": plan.config.targeted or "",
        })
        row["cell_key"] = self.cell_key(cell, row["attack_config"], row["defense_config"])
        nan = float("nan")
        row.update(query_budget=(attack.max_queries if attack else None) or nan, eot_samples=1,
                   batch_size=plan.config.batch_size)
        if outcome is not None:
            n = row["n_samples"] = len(outcome.labels)  # the graded samples, not a rebound split
            clean, robust = int(outcome.clean_correct.sum()), int(outcome.robust.sum())
            row["clean_accuracy"] = clean / n
            low, high = wilson_interval(clean, n)
            row.update(clean_accuracy_ci_low=low, clean_accuracy_ci_high=high)
        if outcome is not None and outcome.invalid_reason is None:
            attacked = outcome.clean_correct  # in a cascade, not the samples it skipped
            if outcome.skipped is not None:
                attacked = attacked & ~outcome.skipped
            row["robust_accuracy"] = robust / n
            low, high = wilson_interval(robust, n)
            row.update(robust_accuracy_ci_low=low, robust_accuracy_ci_high=high)
            row["attack_success_rate"] = (clean - robust) / clean if clean else nan
            row["queries_mean"] = (float(outcome.queries[attacked].float().mean())
                                   if attacked.any() else nan)
            fooled = outcome.queries[attacked & ~outcome.adv_correct].float()
            if len(fooled):
                row.update(queries_success_mean=float(fooled.mean()),
                           queries_success_median=float(fooled.median()))
            needed = outcome.needed_norm
            if needed is not None and bool((~needed.isnan()).any()):
                row["median_norm"] = float(np.median(needed[~needed.isnan()].numpy()))
        reason = error or (outcome.invalid_reason if outcome else None)
        row["valid"] = reason is None
        row["status"] = "ok" if reason is None else ("error" if error else "invalid")
        row["invalid_reason"] = reason or ""
        return row

    def add_certification(self, row: dict[str, Any], cell: Cell, outcome: CellOutcome | None,
                          state: Defended) -> None:
        """Certified accuracy at the cell's ε (L∞ by bounds, L2 by smoothing) and, for
        smoothing, at every radius of RADIUS_GRID whatever the cell's norm; for the
        deterministic certificate the cross-check that must always hold: no certified sample
        is broken by an attack. (Smoothing's certificate holds with probability 1 − α for the
        smoothed classifier, whose noisy PREDICT may still abstain: not cross-checked.)"""
        if cell.split in state.curves:
            n = row["n_samples"]
            for radius, accuracy in zip(RADIUS_GRID, state.curves[cell.split], strict=True):
                row.update(zip(radius_columns(radius),
                               (accuracy, *wilson_interval(round(accuracy * n), n)), strict=True))
        certified = state.certified.get((cell.split, cell.threat.eps))
        if cell.threat.norm != state.certified_norm or certified is None:
            return
        n, count = len(certified), int(certified.sum())
        low, high = wilson_interval(count, n)
        row.update(certified_accuracy=count / n, certified_accuracy_ci_low=low,
                   certified_accuracy_ci_high=high, certifier=state.certifier)
        if outcome is not None and row["valid"] and is_bound_certificate(state.certifier):
            row["certified_broken"] = int((certified & ~outcome.robust).sum())

    def run_cell(self, cell: Cell, defense: Defense, state: Defended) -> CellResult:
        """Attack the defended model on the cell's samples (halving the batch on running out
        of memory); an attack that raises gives an error row, with its traceback."""
        plan = self.plan
        seal = self.seal(self.materialize(state, defense))
        split = cell.split  # graded with the seal's references, whatever plugins rebound since
        data = Split(seal.tensor(f"evaluation images ({split})"),
                     seal.tensor(f"evaluation labels ({split})"))
        clean_pred = seal.tensor(f"clean predictions ({split})")
        targets = seal.tensor(f"targets ({split})") if plan.config.targeted else None
        self.progress.step(f"{cell.defense.name} × {cell.attack_name} {cell.threat.norm} "
                           f"ε={cell.threat.eps:g} ({cell.split})",
                           int((clean_pred == data.y).sum()) - len(cell.skip))
        started = time.perf_counter()
        attack, outcome, error, trace = None, None, None, None
        batch_size = plan.config.batch_size
        while outcome is None and error is None:
            try:
                attack = self.plan.build(cell.attack)
                surrogates = [None]
                if state.bpda and attack.access == "gradient":
                    surrogates.append(state.surrogate)
                combined = None
                for surrogate in surrogates:  # the same seeds for each run
                    reseed(state.model, cell_seed(cell))
                    if surrogate is not None:
                        reseed(surrogate, cell_seed(cell))
                    torch.manual_seed(cell_seed(cell))
                    found = attack_cell(
                        state.model, attack, data, clean_pred, cell.threat,
                        batch_size=batch_size, device=plan.device, seed=plan.config.seed,
                        targets=targets, eot_samples=state.eot_samples,
                        on_batch=self.progress.advance, seal=seal, surrogate=surrogate,
                        skip=cell.skip)
                    combined = found if combined is None else either_fooled(combined, found)
                outcome = combined
            except SealBroken as exc:
                error = f"the defended model cannot be restored: {exc}"
            except Exception as exc:
                if is_out_of_memory(exc) and batch_size > 1:
                    batch_size //= 2
                    self.progress.log(f"out of memory: retrying the cell with batches of "
                                      f"{batch_size}")
                    continue
                trace = "".join(traceback.format_exception(exc))
                error = f"attack raised {one_line(exc)}"
        row = self.row(cell, attack, defense, outcome, time.perf_counter() - started, error)
        row["eot_samples"], row["batch_size"] = state.eot_samples, batch_size
        row["prediction_draws"] = prediction_draws(state.model, state.eot_samples)
        row["adaptive"] = state.adaptive if attack is None or attack.access == "gradient" else ""
        row["abstain_rate"] = float((clean_pred == -1).float().mean())
        self.add_certification(row, cell, outcome, state)
        if targets is not None and outcome is not None and row["valid"]:
            row["targeted_success_rate"] = targeted_success(outcome, targets)
        result = CellResult(row, outcome if error is None else None, trace)
        if attack is not None and result.outcome is not None and row["valid"]:
            try:
                result.figures = self.attack_figures(attack, cell, state, seal, data, outcome)
            except Exception as exc:  # a figure never costs a result
                result.figures_trace = "".join(traceback.format_exception(exc))
        return result

    def attack_figures(self, attack: Attack, cell: Cell, state: Defended, seal: Seal,
                       data: Split, outcome: CellOutcome) -> dict[str, bytes]:
        """The attack's own figures, if it draws any (``figures(oracle, x, y, stem) ->
        [paths]``), on the cell's shown samples through an oracle under the seal (its queries
        are not the cell's); returned as PNG bytes for the driver to write."""
        draws = type(attack).figures is not Attack.figures
        if not draws or outcome.shown is None or len(outcome.shown) == 0:
            return {}
        device = self.plan.device
        x, y = data.x[outcome.shown].to(device), data.y[outcome.shown].to(device)
        stem = cell_stem(cell.attack_name, cell.defense.name, cell.split, cell.threat.norm,
                         cell.threat.eps)
        with tempfile.TemporaryDirectory() as folder, seal.cell():
            reseed(state.model, cell_seed(cell))
            watch = seal.watch(attack.access, None, state.eot_samples, len(x))
            oracle = Oracle(state.model, attack.access, len(x), None, state.eot_samples,
                            guard=watch)
            paths = [Path(p) for p in attack.figures(oracle, x, y, Path(folder) / stem)]
            reason = seal.verdict(watch, oracle, attack)
            if reason is not None:
                raise RuntimeError(f"figures of {attack.name} broke the seal: {reason}")
            return {path.name: path.read_bytes() for path in paths
                    if path.resolve().parent == Path(folder).resolve()}
