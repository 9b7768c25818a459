"""The defense base class: turn a model into a defended classifier.

A training-time defense changes how the model is trained (override ``training_loss``); an
inference-time defense wraps the trained model (override ``wrap``). Both may do both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from advbench.data import Split


@dataclass(frozen=True)
class TrainSettings:
    """How models are trained; part of every cached model's key."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 5e-3
    n_train: int | None = None


@dataclass
class TrainContext:
    """What a defense gets to train with."""

    settings: TrainSettings
    device: torch.device
    seed: int
    pretrained: bool = False
    on_batch: Callable[[], None] = field(default=lambda: None)


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

    def training_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float
    ) -> torch.Tensor:
        """Loss of one training batch; ``progress`` runs from 0 to 1 over training."""
        return nn.functional.cross_entropy(model(x), y)

    def fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        """Train ``model`` on ``train`` with this defense's loss and return it."""
        from advbench.algorithms.training import train_classifier

        train_classifier(model, train, ctx, self.training_loss)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The classifier attacks will face, built around the trained model."""
        return model
