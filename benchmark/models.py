"""Model architectures as plugins, and ``package.module:factory`` import paths."""

from __future__ import annotations

import importlib
import inspect
import io
import sys
from typing import ClassVar

from torch import nn

from advbench.errors import UsageError


class ModelPlugin:
    """Base class of model plugins: builds an untrained classifier returning logits."""

    name: str  # a class attribute; an imported model's is its path
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
        except (Exception, SystemExit) as exc:  # the module itself fails, or exits, at import
            raise UsageError(f"--model {path!r}: importing {module_name} failed "
                             f"({type(exc).__name__}: {exc})") from None
        self.name = path

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        offered = {"in_shape": in_shape, "num_classes": num_classes}
        accepted = inspect.signature(self.factory).parameters
        stdin, sys.stdin = sys.stdin, io.StringIO()  # a factory reading stdin must not wait
        try:
            model = self.factory(**{key: value for key, value in offered.items()
                                    if key in accepted})
        except SystemExit as exc:
            raise UsageError(f"--model {self.name!r}: the factory called sys.exit({exc.code!r})"
                             "; give a factory returning a torch.nn.Module") from None
        finally:
            sys.stdin = stdin
        if not isinstance(model, nn.Module):
            raise UsageError(f"--model {self.name!r} returned {type(model).__name__}, "
                             "not a torch.nn.Module")
        return model
