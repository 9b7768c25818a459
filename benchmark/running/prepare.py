"""Model preparation: train (or load) each defended model, seal it, certify it.

A :class:`Preparer` turns a defense into a :class:`Defended` state that every cell of it shares:
the model trained once (``advbench.running.model_cache`` keeps it between runs), its clean
predictions and targets, its randomness, its certificates, and the :class:`Seal` over all of
these that the cells are graded under. It writes nothing into the run folder.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advbench._util import one_line, write_atomic
from advbench.algorithms.bounds import applicable_method, certify, unsupported_reason
from advbench.algorithms.smoothing import certified_accuracy
from advbench.algorithms.training import training_steps
from advbench.defense import (
    Certifier,
    DatasetInfo,
    Defense,
    Reseedable,
    TrainContext,
    bpda_surrogate,
    declared_surrogate,
)
from advbench.reporting.results import RADIUS_GRID, radius_columns, wilson_interval
from advbench.reporting.sanity import ZERO_GRADIENT_LIMIT, zero_gradient_fraction
from advbench.running.evaluate import CellOutcome, has_own_predict, is_randomized, predict
from advbench.running.model_cache import (
    ModelCache,
    cache_roots,
    content_key,
    data_fingerprint,
    read_history,
)
from advbench.running.plan import Cell, Plan, choose_targets
from advbench.running.plugin_code import plugin_code
from advbench.running.progress import RunProgress
from advbench.running.served import ServedClassifier, ServeFailed
from advbench.seal import Pristine, Seal, fingerprint, listed
from advbench.threat import ThreatModel

CERTIFIER = "crown-ibp"  # CROWN back-substitution over IBP intermediate bounds


def is_bound_certificate(certifier: str) -> bool:
    """Whether rows name the harness's own bound-propagation certificate (``ibp``,
    ``crown-ibp`` or ``ibp+crown-ibp``: ``applicable_method``'s names), which is deterministic,
    so no attack may ever break a sample it certified (the cross-check)."""
    return certifier == "ibp" or certifier.endswith(CERTIFIER)


def reseed(model: object, seed: int) -> None:
    """Restart a randomized model's noise (if it offers ``reseed``), so that each cell draws the
    same noise whether it runs in one go or after a resume."""
    if isinstance(model, Reseedable):
        model.reseed(seed)


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
    randomized: bool = False  # two forward passes on the same inputs differ

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "model": None, "seal": None, "surrogate": None}

    @property
    def adaptive(self) -> str:
        """How gradient attacks adapt to this defense: ``eot``, ``bpda``, both, or neither."""
        return "+".join(name for name, used in (("eot", self.eot_samples > 1),
                                                ("bpda", self.bpda)) if used)


def add_certification(row: dict[str, Any], cell: Cell, outcome: CellOutcome | None,
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


class Preparer:
    """Trains (or loads) each defended model of one plan and makes it ready to attack."""

    def __init__(self, plan: Plan, user_model: nn.Module | None, progress: RunProgress) -> None:
        self.plan, self.user_model, self.progress = plan, user_model, progress
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
        defense_class: type = type(defense)
        return {"dataset": plan.dataset.name, "model": plan.model_plugin.name,
                "model_source": list(plan.model_source),
                "defense": type(defense).name,
                "defense_config": defense.resolved_training_config(self.train_context(defense)),
                "defense_source": [source.distribution, source.version],
                "defense_code": plugin_code(defense_class),  # an edited, unversioned defense
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
        except ServeFailed as exc:  # its reason names the step, in the model server
            raise DefenseFailed(f"defense failed: {exc}") from exc
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
        state = self.graded(defense, model, weights)
        state.history, state.log = history, [line, *state.log]
        if isinstance(model, ServedClassifier):
            state.log.append(f"{type(defense).name}: its classifier runs in a model server of "
                             "its own, queried by the harness")
        self.adapt(state, defense, base)
        state.seconds["training"] = trained - started
        certifying = time.perf_counter()
        state.seconds["preparation"] = certifying - trained
        self.certify(state, model)
        state.seconds["certification"] = time.perf_counter() - certifying
        self.seal(state)
        return state

    def graded(self, defense: Defense, model: nn.Module, weights: dict[str, torch.Tensor]
               ) -> Defended:
        """The defended model's clean predictions and targets on every split, graded over as
        many draws as a randomized model needs (the same rule as its cells')."""
        plan, config = self.plan, self.plan.config
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
        state = Defended(model, weights, clean_pred, targets, draws, randomized=randomized)
        if randomized:
            state.log.append(f"{type(defense).name}: randomized model detected, gradient "
                             f"attacks use EOT over {draws} draws, predictions are graded "
                             + ("by its own predict" if has_own_predict(model) else
                                f"by the mean softmax of {draws} draws"))
        return state

    def adapt(self, state: Defended, defense: Defense, base: nn.Module) -> None:
        """BPDA when the defense wraps its trained model: declared, deterministic, or masking
        the gradient (the unwrapped model's or its ``bpda_surrogate``'s gradients then too)."""
        plan, model = self.plan, state.model
        assert model is not None
        if model is base:
            return
        declared = declared_surrogate(defense, base)  # None: the wrapper as the identity
        if declared is not None or not state.randomized or zero_gradient_fraction(
                model, next(iter(plan.evaluation.values())), plan.device) > ZERO_GRADIENT_LIMIT:
            state.bpda, state.surrogate = True, base if declared is None else declared
            state.log.append(f"{type(defense).name}: the defense wraps its trained model, "
                             "gradient attacks also run with BPDA (" + (
                                 "the unwrapped model's" if declared is None else
                                 "its bpda_surrogate's") + " gradients)")

    def certify(self, state: Defended, model: nn.Module) -> None:
        """The model's own certificate, if it has one, and the harness's bounds at each L∞ ε
        of the run for a deterministic model they apply to."""
        plan = self.plan
        if isinstance(model, Certifier):
            self.certify_own(state, model)
        if unsupported_reason(model) is None and not state.randomized:
            state.certifier = applicable_method(model, CERTIFIER)
            state.certified_norm = "linf"
            for split, data in plan.evaluation.items():
                for eps in plan.eps.get("linf", []):
                    certified = certify(model, data.x.to(plan.device), data.y.to(plan.device),
                                        eps, CERTIFIER)
                    state.certified[(split, eps)] = certified.cpu()

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
