"""Model architectures as plugins, and ``package.module:factory`` import paths."""

from __future__ import annotations

import importlib
import inspect
from typing import ClassVar

from torch import nn

from advbench.errors import UsageError


class ModelPlugin:
    """Base class of model plugins: builds an untrained classifier returning logits."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError


class ImportedModel(ModelPlugin):
    """A model given as ``package.module:factory``: the factory is called with the keyword
    arguments among ``in_shape`` and ``num_classes`` that it accepts, and must return a module."""

    description = "a factory given by import path"

    def __init__(self, path: str) -> None:
        module_name, _, attribute = path.partition(":")
        if not module_name or not attribute:
            raise UsageError(f"--model {path!r}: expected a plugin name or package.module:factory")
        try:
            self.factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"--model {path!r}: cannot import it ({exc})") from exc
        self.name = path

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        offered = {"in_shape": in_shape, "num_classes": num_classes}
        accepted = inspect.signature(self.factory).parameters
        model = self.factory(**{key: value for key, value in offered.items() if key in accepted})
        if not isinstance(model, nn.Module):
            raise UsageError(f"--model {self.name!r} returned {type(model).__name__}, "
                             "not a torch.nn.Module")
        return model
