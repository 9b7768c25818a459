"""bench: run every adversarial attack against every defense, and check every number.

The public API for plugin authors and notebook users; plugins import only these names. They
are imported lazily so that ``bench --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from advbench.hookspecs import hookimpl

_EXPORTS = {
    "Attack": "attack", "AttackContext": "attack",
    "Dataset": "data", "Split": "data",
    "Defense": "defense", "TrainContext": "defense", "TrainSettings": "defense",
    "BenchError": "errors", "PluginLoadError": "errors", "PluginUnavailable": "errors",
    "UsageError": "errors",
    "GateResult": "gate", "check_adversarial": "gate",
    "ModelPlugin": "models",
    "argument": "plugin_system.options",
    "AccessError": "oracle", "Oracle": "oracle", "QueryBudgetExceeded": "oracle",
    "dlr": "algorithms.losses", "dlr_loss": "algorithms.losses",
    "kl_divergence": "algorithms.losses", "kl_loss": "algorithms.losses",
    "margin": "algorithms.losses", "margin_loss": "algorithms.losses",
    "targeted_dlr": "algorithms.losses", "targeted_dlr_loss": "algorithms.losses",
    "load_registry": "plugin_system.loader",
    "RunConfig": "running.config", "evaluate_model": "running.driver",
    "run_matrix": "running.driver",
    "ThreatModel": "threat",
}

try:
    __version__ = version("advbench")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["hookimpl", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'advbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
