"""bench: run every adversarial attack against every defense, and check every number.

The public API for plugin authors and notebook users; plugins import only these names. They
are imported lazily so that ``bench --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from advbench.hookspecs import hookimpl

if TYPE_CHECKING:  # what type checkers see of the lazy names that public modules define
    from advbench.algorithms.losses import dlr as dlr
    from advbench.algorithms.losses import dlr_loss as dlr_loss
    from advbench.algorithms.losses import kl_divergence as kl_divergence
    from advbench.algorithms.losses import kl_loss as kl_loss
    from advbench.algorithms.losses import margin as margin
    from advbench.algorithms.losses import margin_loss as margin_loss
    from advbench.algorithms.losses import targeted_dlr as targeted_dlr
    from advbench.algorithms.losses import targeted_dlr_loss as targeted_dlr_loss
    from advbench.attack import Attack as Attack
    from advbench.attack import AttackContext as AttackContext
    from advbench.data import Dataset as Dataset
    from advbench.data import Split as Split
    from advbench.defense import Defense as Defense
    from advbench.defense import TrainContext as TrainContext
    from advbench.defense import TrainSettings as TrainSettings
    from advbench.errors import BenchError as BenchError
    from advbench.errors import PluginLoadError as PluginLoadError
    from advbench.errors import PluginUnavailable as PluginUnavailable
    from advbench.errors import UsageError as UsageError
    from advbench.gate import GateResult as GateResult
    from advbench.gate import check_adversarial as check_adversarial
    from advbench.models import ModelPlugin as ModelPlugin
    from advbench.oracle import AccessError as AccessError
    from advbench.oracle import Oracle as Oracle
    from advbench.oracle import QueryBudgetExceeded as QueryBudgetExceeded
    from advbench.threat import ThreatModel as ThreatModel

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
    "run_matrix": "running.driver", "run_isolated": "running.isolation",
    "served_defense": "running.served",
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
