"""A trained module passed to ``run_matrix``, standing in the registry for a model plugin."""

from __future__ import annotations

import copy
import functools

from torch import nn

from advbench.errors import BenchError
from advbench.models import ModelPlugin
from advbench.plugin_system.registry import Entry, Registry, Source


class UserModel(ModelPlugin):
    """Stands for a module the user passed in; never built (the runner copies the module)."""

    description = "a trained torch.nn.Module passed to run_matrix"

    def __init__(self, name: str = "user-model") -> None:
        self.name = name

    def build(self, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise BenchError("a user-supplied model is copied, not built")


def registry_with_user_model(registry: Registry, name: str) -> Registry:
    """A copy of ``registry`` where ``name`` resolves to the user's module."""
    extended = copy.copy(registry)
    extended.entries = {kind: dict(entries) for kind, entries in registry.entries.items()}
    factory = functools.partial(UserModel, name)  # a module-level class: it pickles
    extended.entries["model"][name] = Entry(name, "model", factory, Source("user", "local", "-"))
    return extended
