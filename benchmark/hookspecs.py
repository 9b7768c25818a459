"""The one hookspec module of bench. Every hook starts with ``bench_``.

A plugin is a module (or object) with functions marked ``@advbench.hookimpl``, declared in the
``advbench.plugins`` entry-point group. Each hook returns a list of classes; the registry checks
their base class and rejects duplicate names. Keep this module free of heavy imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from advbench.attack import Attack
    from advbench.data import Dataset
    from advbench.defense import Defense
    from advbench.models import ModelPlugin

PROJECT = "advbench"
ENTRY_POINT_GROUP = "advbench.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def bench_attacks() -> list[type[Attack]]:
    """Return the attack classes (subclasses of :class:`advbench.Attack`) this plugin adds."""


@hookspec
def bench_defenses() -> list[type[Defense]]:
    """Return the defense classes (subclasses of :class:`advbench.Defense`) this plugin adds."""


@hookspec
def bench_datasets() -> list[type[Dataset]]:
    """Return the dataset classes (subclasses of :class:`advbench.Dataset`) this plugin adds."""


@hookspec
def bench_models() -> list[type[ModelPlugin]]:
    """Return the model classes (subclasses of :class:`advbench.ModelPlugin`) this plugin adds."""
