"""The plugin catalog's process: ``python -m advbench.plugin_system.catalog_process FD``.

It reads one request (:mod:`.catalog`) on stdin and answers on file descriptor FD, a JSON line
per item, each after a line naming the item it starts: so that the harness knows which item
hung or ended the process. Plugin modules run here, never in the harness.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Literal, Union, get_args, get_origin

from advbench import hookspecs
from advbench._util import one_line
from advbench.attack import Attack
from advbench.defense import Defense
from advbench.errors import Interrupted
from advbench.plugin_system.declared import (
    CONTAINERS,
    FLAGS,
    MAX_DEPTH,
    SCALARS,
    DeclarationError,
    context_from_json,
    plain,
    rebuild,
)
from advbench.plugin_system.loader import Loader
from advbench.plugin_system.options import field_hint
from advbench.plugin_system.registry import Source
from advbench.running.plugin_code import plugin_code


def hint_to_json(hint: Any, depth: int = 0) -> dict[str, Any]:
    """A field's resolved annotation in the declaration's grammar; what it cannot say is
    ``any`` (the harness then checks only that a value is plain)."""
    origin, args = get_origin(hint), get_args(hint)
    if depth > MAX_DEPTH:
        return {"t": "any"}
    for name, scalar in SCALARS.items():
        if hint is scalar:
            return {"t": name}
    if origin is Literal and plain(list(args)):
        return {"t": "literal", "values": list(args)}
    if origin in (Union, types.UnionType):
        return {"t": "union", "args": [hint_to_json(arg, depth + 1) for arg in args]}
    if hint in CONTAINERS:  # bare: tuple, list, dict
        return {"t": CONTAINERS[hint], "args": [], "tuple": hint is tuple}
    if origin in CONTAINERS:
        kind = CONTAINERS[origin]
        if kind == "tuple" and args and args[-1] is Ellipsis:
            return {"t": "list", "args": [hint_to_json(args[0], depth + 1)], "tuple": True}
        return {"t": kind, "args": [hint_to_json(arg, depth + 1) for arg in args],
                "tuple": origin is tuple}
    return {"t": "any"}


def fields_of(cls: type) -> list[dict[str, Any]]:
    """Each field a user may set, as the declaration carries it. A field whose default is not
    a plain value cannot be set by a user: it is left out (the real class keeps its default)."""
    fields: list[dict[str, Any]] = []
    specs: tuple[dataclasses.Field[Any], ...] = (
        dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ())
    for spec in specs:
        if not spec.init:
            continue
        if spec.default is not dataclasses.MISSING:
            default = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            raise DeclarationError(f"{cls.__name__}.{spec.name} has no default; give every "
                                   "field one, so that 'all' can build the plugin")
        if not plain(default):
            continue
        fields.append({"name": spec.name, "default": default,
                       "hint": hint_to_json(field_hint(cls, spec)),
                       "bounds": {k: v for k, v in spec.metadata.items()
                                  if k in ("ge", "gt", "le", "lt") and plain(v)}})
    return fields


def overrides(cls: type[Defense], method: str) -> bool:
    """Whether a defense has its own ``method`` (``wrap``, ``bpda_surrogate``): then that method
    runs in a model server, around the trained model."""
    return getattr(cls, method) is not getattr(Defense, method)


def declaration(cls: type[Attack] | type[Defense]) -> dict[str, Any]:
    """What the harness needs of an attack or a defense, as plain JSON (see
    :mod:`advbench.plugin_system.declared`)."""
    found: dict[str, Any] = {
        "name": cls.name, "module": cls.__module__, "qualname": cls.__qualname__,
        "description": str(cls.description),
        "presets": {k: dict(v) for k, v in cls.presets.items()},
        "code": plugin_code(typing.cast(type, cls)), "fields": fields_of(cls)}
    if issubclass(cls, Attack):
        queries = getattr(cls, "max_queries", None)
        found.update(kind="attack", norms=list(cls.norms), access=cls.access,
                     max_queries=queries if queries is None or type(queries) is int
                     else "computed", **{flag: getattr(cls, flag) for flag in FLAGS})
    else:
        found.update(kind="defense", randomized=cls.randomized,
                     preset_epochs=dict(cls.preset_epochs),
                     wrapper_fields=sorted(cls.wrapper_fields),
                     wraps=overrides(cls, "wrap"), surrogate=overrides(cls, "bpda_surrogate"))
    if not plain(found["presets"]):
        raise DeclarationError(f"{cls.__name__}.presets holds values that are not plain "
                               "(numbers, strings, booleans, null or lists of them)")
    return found


def entry_point_loader(spec: dict[str, str]) -> Callable[[], object]:
    """The ``load`` of the entry point ``spec`` names (its name and distribution)."""
    for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP, name=spec["plugin"]):
        if (ep.dist.name if ep.dist else "unknown") == spec["distribution"]:
            return ep.load

    def missing() -> object:
        raise ImportError(f"entry point {spec['plugin']} of {spec['distribution']} not found")
    return missing


def load_one(loader: Loader, spec: dict[str, str]) -> dict[str, Any]:
    """Load one plugin module with the harness's own loader and say what it registered."""
    registry = loader.registry
    source = Source(spec["plugin"], spec["distribution"], spec["version"])
    known = {kind: set(entries) for kind, entries in registry.entries.items()}
    failed, unavailable = len(registry.failures), len(registry.unavailable)
    load = (entry_point_loader(spec) if "entry_point" in spec
            else functools.partial(importlib.import_module, spec["module"]))
    loader.load_one(source, load)
    loader.collect(only=source.plugin)
    report: dict[str, Any] = {"kinds": [], "declared": [], "failures": [], "unavailable": []}
    for kind, entries in registry.entries.items():
        new = [entries[name] for name in entries if name not in known[kind]]
        if new:
            report["kinds"].append(kind)
        for entry in new if kind in ("attack", "defense") else ():
            try:
                report["declared"].append(declaration(entry.cls))
            except Exception as exc:
                report["failures"].append(f"{entry.name}: {one_line(exc)}")
    report["failures"] += [f.error for f in registry.failures[failed:]]
    report["unavailable"] += [f.error for f in registry.unavailable[unavailable:]]
    return report


def build_one(item: dict[str, Any]) -> dict[str, Any]:
    """One plugin built with its arguments: its config (and an attack's budget), or why it
    refused them."""
    try:
        plugin = rebuild(item["module"], item["qualname"], item["arguments"])
        found: dict[str, Any] = {"config": json.loads(json.dumps(plugin.config(), default=repr))}
        if isinstance(plugin, Attack):
            budget = plugin.max_queries
            if not (budget is None or type(budget) is int):
                raise TypeError(f"max_queries is {type(budget).__name__}, not an integer or "
                                "None")
            found["max_queries"] = budget
    except Exception as exc:
        return {"error": one_line(exc)}
    return found


def training_config(item: dict[str, Any]) -> dict[str, Any]:
    """A defense's ``resolved_training_config`` for a run's context, or why it failed."""
    try:
        defense = rebuild(item["module"], item["qualname"], item["arguments"])
        assert isinstance(defense, Defense)
        config = defense.resolved_training_config(context_from_json(item["ctx"]))
        return {"config": json.loads(json.dumps(config, default=repr))}
    except Exception as exc:
        return {"error": one_line(exc)}


def main() -> None:
    """Answer one request (see the module's text) on the file descriptor given."""
    out = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
    request = json.load(sys.stdin)
    sys.path[:] = request["path"]
    loader = Loader(strict=False) if request["op"] == "load" else None
    for index in range(request["start"], len(request["items"])):
        item = request["items"][index]
        out.write(json.dumps({"at": index}) + "\n")
        out.flush()
        try:
            answer = (load_one(loader, item) if loader is not None else
                  build_one(item) if request["op"] == "resolve" else training_config(item))
        except Interrupted as exc:  # a plugin raised KeyboardInterrupt: bench stops, naming it
            answer = {"interrupted": str(exc)}
        out.write(json.dumps({"item": index, **answer}, default=repr) + "\n")
        out.flush()
    out.close()
    sys.stdout.flush()
    os._exit(0)  # threads a plugin started do not keep the process alive


if __name__ == "__main__":
    main()
