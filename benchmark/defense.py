"""The defense base class: turn a model into a defended classifier.

A training-time defense changes how the model is trained (override ``training_loss``); an
inference-time defense wraps the trained model (override ``wrap``). Both may do both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


class Defense:
    """Base class of every defense.

    Class attributes: ``name``; ``randomized`` (the defended classifier's output is random, so
    attacks must average over it); ``wrapper_fields`` (fields used only by ``wrap``, not in
    training). Write defenses as ``@dataclass(kw_only=True)`` with defaults.
    """

    name: ClassVar[str]
    randomized: ClassVar[bool] = False
    description: ClassVar[str] = ""
    wrapper_fields: ClassVar[frozenset[str]] = frozenset()

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
