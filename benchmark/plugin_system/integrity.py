"""The harness's grading code as it was before any plugin loaded, to catch a plugin that changes it.

Plugin modules that register a defense, dataset or model are imported into the harness process
(those run there; a third-party module registering only attacks is read by the plugin catalog,
in a process of its own), so such a module could, at import, rebind
``advbench.gate.check_adversarial`` or swap a function's code. The loader takes a
:class:`Snapshot` of the grading modules first and checks it after each plugin module: a module
that changed any of them is refused and the change undone.
"""

from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, field
from typing import Any

# What grades a cell, from the attack's output to the row.
GRADING_MODULES = (
    "advbench.gate", "advbench.threat", "advbench.attack", "advbench.oracle", "advbench.seal",
    "advbench.running.evaluate", "advbench.running.cells", "advbench.running.isolation",
    "advbench.running.wire", "advbench.reporting.results",
)


def own_objects(module: types.ModuleType) -> dict[str, Any]:
    """The functions and classes ``module`` binds that come from bench itself."""
    return {name: value for name, value in vars(module).items()
            if isinstance(value, type | types.FunctionType)
            and str(getattr(value, "__module__", "")).startswith("advbench")}


def functions_of(cls: type) -> dict[str, types.FunctionType]:
    """The plain functions a class defines itself (methods, static and class methods)."""
    found = {}
    for name, value in vars(cls).items():
        function = getattr(value, "__func__", value)
        if isinstance(function, types.FunctionType):
            found[name] = function
    return found


@dataclass
class Snapshot:
    """Each grading module's bindings, each class's attributes and each function's code."""

    bindings: dict[tuple[str, str], Any] = field(default_factory=dict)
    members: dict[tuple[type, str], Any] = field(default_factory=dict)
    code: dict[types.FunctionType, types.CodeType] = field(default_factory=dict)

    @classmethod
    def take(cls) -> Snapshot:
        snapshot = cls()
        for module_name in GRADING_MODULES:
            module = importlib.import_module(module_name)
            for name, value in own_objects(module).items():
                snapshot.bindings[module_name, name] = value
                functions = functions_of(value) if isinstance(value, type) else {"": value}
                for attribute, function in functions.items():
                    if attribute:
                        snapshot.members[value, attribute] = vars(value)[attribute]
                    snapshot.code[function] = function.__code__
        return snapshot

    def restore(self) -> list[str]:
        """Undo every change since the snapshot; the names of what had changed."""
        changed = []
        for (module_name, name), value in self.bindings.items():
            module = importlib.import_module(module_name)
            if getattr(module, name, None) is not value:
                setattr(module, name, value)
                changed.append(f"{module_name}.{name}")
        for (owner, name), value in self.members.items():
            if vars(owner).get(name) is not value:
                setattr(owner, name, value)
                changed.append(f"{owner.__module__}.{owner.__qualname__}.{name}")
        for function, code in self.code.items():
            if function.__code__ is not code:
                function.__code__ = code
                changed.append(f"the code of {function.__module__}.{function.__qualname__}")
        return changed
