"""Module names from before the 0.2 layout still import, as aliases of where each module moved.

Third parties who wrote ``from advbench.iterative import pgd`` keep working; the alias warns
with the new name. The CHANGELOG lists every move.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "iterative": "algorithms.pgd", "apgd": "algorithms.apgd", "losses": "algorithms.losses",
    "bounds": "algorithms.bounds", "smoothing": "algorithms.smoothing",
    "adversarial_training": "algorithms.adversarial_training",
    "training": "algorithms.training", "pixel_scan": "algorithms.pixel_scan",
    "plugins": "plugin_system.loader", "registry": "plugin_system.registry",
    "options": "plugin_system.options", "presets": "plugin_system.presets",
    "plan": "running.plan", "runner": "running.driver", "worker": "running.worker",
    "evaluate": "running.evaluate", "guard": "running.guard", "progress": "running.progress",
    "executors": "running.executors", "ray_executor": "running.executors.ray",
    "results": "reporting.results", "leaderboard": "reporting.leaderboard",
    "sanity": "reporting.sanity", "figures": "reporting.figures",
    "pictures": "reporting.pictures", "site": "reporting.site",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``advbench.<old>`` to the module now at ``advbench.<new>``."""

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != "advbench" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def exec_module(self, module: ModuleType) -> None:
        new = "advbench." + MOVED[module.__name__.partition(".")[2]]
        warnings.warn(f"{module.__name__} moved to {new}; the old name is kept as an alias",
                      DeprecationWarning, stacklevel=2)
        # The import system returns what sys.modules holds once exec_module is done.
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
