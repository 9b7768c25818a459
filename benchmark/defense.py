"""The defense base class: turn a model into a defended classifier.

A training-time defense changes how the model is trained (override ``training_loss``); an
inference-time defense wraps the trained model (override ``wrap``). Both may do both.

The loss reaches the run through ``self.context``: the default ``fit`` sets it to its
:class:`TrainContext` while training (None otherwise), so ``training_loss`` keeps the signature
``(model, x, y, progress)`` and older defenses work unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from advbench.algorithms.training import train_classifier
from advbench.data import Dataset, Split
from advbench.threat import ThreatModel

# The ε a context without threat models or dataset trains at (Fashion-MNIST's budgets): only
# tests and notebooks build such contexts; a run always gives both.
FALLBACK_EPS: Mapping[str, float] = {"linf": 0.1, "l2": 1.5}


@dataclass(frozen=True)
class TrainSettings:
    """How models are trained; part of every cached model's key."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 5e-3
    n_train: int | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """What a defense may know of the run's dataset: a description, not the plugin (whose
    ``load`` would reach the test split)."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    default_eps: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetInfo:
        return cls(dataset.name, (*dataset.shape,), dataset.num_classes,
                   dict(dataset.default_eps))


@dataclass
class TrainContext:
    """What a defense gets to train with.

    ``threats`` are the threat models the run will attack with (empty outside a run),
    ``dataset`` describes the data (None outside a run). ``generator`` is made here, on
    ``device``, seeded with ``seed + 1`` (``seed`` itself orders the batches): draw every random
    number of training from it, so the same configuration trains the same model.
    """

    settings: TrainSettings
    device: torch.device
    seed: int
    pretrained: bool = False
    on_batch: Callable[[], None] = field(default=lambda: None)
    threats: tuple[ThreatModel, ...] = ()
    dataset: DatasetInfo | None = None
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)

    def eps_for(self, norm: str, given: float | None = None) -> float:
        """The ε to train at in ``norm``: ``given`` if set (the user's), else the largest the
        run attacks with, else the dataset's default, else :data:`FALLBACK_EPS`."""
        if given is not None:
            return given
        run = [threat.eps for threat in self.threats if threat.norm == norm]
        if run:
            return max(run)
        if self.dataset is not None and norm in self.dataset.default_eps:
            return float(self.dataset.default_eps[norm])
        if norm in FALLBACK_EPS:
            return FALLBACK_EPS[norm]
        raise ValueError(f"no {norm} ε to train at: the run has none; set eps")


class History(Protocol):
    """Training curves a defense kept; the runner stores ``to_dict()`` as JSON."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Reseedable(Protocol):
    """A randomized classifier whose noise the runner restarts before each cell, so that a
    cell draws the same noise whether it runs in one go or after a resume."""

    def reseed(self, seed: int) -> None: ...


@runtime_checkable
class Certifier(Protocol):
    """A classifier that certifies its own predictions: ``certify(x)`` returns per sample the
    certified class (−1: abstain) and the radius in ``certified_norm`` (``l2`` or ``linf``) up
    to which it holds. Rows name the method ``certifier`` (e.g. ``randomized-smoothing``)."""

    certifier: str
    certified_norm: str

    def certify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class Defense:
    """Base class of every defense.

    Class attributes: ``name``; ``randomized`` (the defended classifier's output is random, so
    attacks must average over it); ``wrapper_fields`` (fields used only by ``wrap``, not in
    training); ``presets`` (constructor arguments per preset name, where the defense costs
    too much at its defaults for that preset, e.g. ``{"cpu": {"n": 100}}``); ``preset_epochs``
    (training epochs per preset name where an epoch costs several clean ones, e.g.
    ``{"cpu": 1}``). Write defenses as ``@dataclass(kw_only=True)`` with defaults.

    ``history``: after ``fit``, what the runner saves as the training curves (an object with
    ``to_dict()``), or None. The classifier ``wrap`` returns may also offer ``reseed``
    (:class:`Reseedable`) and ``certify`` (:class:`Certifier`).
    """

    name: ClassVar[str]
    randomized: ClassVar[bool] = False
    description: ClassVar[str] = ""
    wrapper_fields: ClassVar[frozenset[str]] = frozenset()
    # The context of the ``fit`` under way, None otherwise (a ClassVar: not configuration).
    context: ClassVar[TrainContext | None] = None
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    preset_epochs: ClassVar[Mapping[str, int]] = {}
    history: ClassVar[History | None] = None

    def config(self) -> dict[str, Any]:
        """The settings that shape the defended model (its dataclass fields)."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def training_config(self) -> dict[str, Any]:
        """The settings that shape the trained model: what keys its cache entry, so changing
        only a wrapper field reuses the trained model instead of training it again."""
        return {k: v for k, v in self.config().items() if k not in self.wrapper_fields}

    def resolved_training_config(self, ctx: TrainContext) -> dict[str, Any]:
        """``training_config()`` with every setting left to the run filled in from ``ctx``: what
        the cache key holds, so runs at different ε never share a model. Override it when
        training reads the run from the context (the adversarial-training base does)."""
        return self.training_config()

    def training_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> torch.Tensor:
        """Loss of one training batch; ``progress`` runs from 0 to 1 over training. During
        ``fit``, ``self.context`` is the run's :class:`TrainContext` (generator, threats,
        dataset). The loop's contract is in :mod:`advbench.algorithms.training`."""
        return nn.functional.cross_entropy(model(x), y)

    @contextmanager
    def using(self, ctx: TrainContext) -> Iterator[TrainContext]:
        """``self.context`` is ``ctx`` inside the block; a ``fit`` of your own wraps its
        training in it. Cleared after, because a cached model skips ``fit``: ``wrap`` must not
        depend on it."""
        object.__setattr__(self, "context", ctx)  # frozen dataclasses too
        try:
            yield ctx
        finally:
            object.__setattr__(self, "context", None)

    def fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        """Train ``model`` on ``train`` with this defense's loss and return it; the loss sees
        ``ctx`` as ``self.context``."""
        with self.using(ctx):
            train_classifier(model, train, ctx, self.training_loss)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The classifier attacks will face, built around the trained model."""
        return model

    def bpda_surrogate(self, model: nn.Module) -> nn.Module | None:
        """A differentiable stand-in for ``wrap(model)`` that gradient attacks differentiate
        under BPDA (Athalye, Carlini & Wagner 2018), while predictions stay the wrapped
        model's: e.g. the wrapper without its non-differentiable step. Build it around
        ``model`` itself (share its parameters, copy nothing) and keep it deterministic. None
        (the default): ``model``, as if the whole wrapper were the identity."""
        return None


def declared_surrogate(defense: Defense, model: nn.Module) -> nn.Module | None:
    """``defense``'s own BPDA surrogate of the trained ``model`` in eval mode (None when it
    declares none); a defense that declares one gets BPDA whenever it wraps its model."""
    surrogate = defense.bpda_surrogate(model)
    if surrogate is None:
        return None
    if not isinstance(surrogate, nn.Module):
        raise TypeError(f"bpda_surrogate() returned {type(surrogate).__name__}, not an "
                        "nn.Module (or None for the trained model itself)")
    return surrogate.eval()


def bpda_surrogate(defense: Defense, model: nn.Module) -> nn.Module:
    """What gradient attacks differentiate when the harness uses BPDA on ``defense``: its own
    :meth:`Defense.bpda_surrogate` of the trained ``model``, else ``model`` itself."""
    declared = declared_surrogate(defense, model)
    return model if declared is None else declared
