"""Plugin arguments set by the user: ``--set PLUGIN.KEY=V[,V...]``, one variant per value.

Attack and defense plugins are dataclasses whose fields are their arguments (σ of smoothing,
PGD's steps, adversarial training's clean share...). ``--set gaussian-smoothing.sigma=0.25,0.5``
runs the plugin once per value, as two rows named ``gaussian-smoothing(sigma=0.25)`` and
``gaussian-smoothing(sigma=0.5)``; several keys of one plugin give every combination. A plugin
given arguments is always named with them, so results of runs with other arguments never share
its name. The user's arguments override the preset's.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UsageError
from .registry import Entry

TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              tuple: "a list"}
Options = Mapping[str, Mapping[str, Sequence[Any]]]  # plugin → argument → values


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets, so ``values=[0,1],[1]`` gives two values."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def parse_value(text: str) -> Any:
    """A JSON or Python literal (0.5, 10, true, [0, 1], "x"); anything else is a string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def parse_set(specs: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """``["pgd-linf.steps=10,40", ...]`` → ``{"pgd-linf": {"steps": [10, 40]}}``."""
    options: dict[str, dict[str, list[Any]]] = {}
    for spec in specs:
        target, sep, values = spec.partition("=")
        plugin, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not plugin or not key or not values.strip():
            raise UsageError(f"--set {spec!r}: expected PLUGIN.KEY=VALUE[,VALUE...], e.g. "
                             "--set gaussian-smoothing.sigma=0.25,0.5")
        parsed = [parse_value(v.strip()) for v in split_top_level(values)]
        options.setdefault(plugin, {})[key] = parsed
    return options


def arguments_of(cls: type) -> list[str]:
    """The arguments a plugin class accepts: its dataclass fields that take a value."""
    if not dataclasses.is_dataclass(cls):
        return []
    return [f.name for f in dataclasses.fields(cls) if f.init]


def checked_value(cls: type, key: str, value: Any) -> Any:
    """``value`` if it has the type of the argument's default (an int for a float is fine,
    a list for a tuple becomes one); a usage error naming the expected type otherwise."""
    default = next(f.default for f in dataclasses.fields(cls) if f.name == key)
    expected = next((t for t in (bool, int, float, str, tuple) if isinstance(default, t)), None)
    if expected is tuple and isinstance(value, list):
        return tuple(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is None or (isinstance(value, expected)
                            and not (expected is int and isinstance(value, bool))):
        return value
    raise UsageError(f"--set {cls.name}.{key}={value!r}: expected {TYPE_NAMES[expected]}, like "
                     f"its default {default!r}")


def variant_label(name: str, arguments: Mapping[str, Any]) -> str:
    return f"{name}({','.join(f'{k}={v}' for k, v in arguments.items())})"


def variants(entry: Entry, arguments: Mapping[str, Sequence[Any]]) -> list[Entry]:
    """One entry per combination of the values given to ``entry``'s arguments."""
    accepted = arguments_of(entry.cls)
    for key in arguments:
        if key not in accepted:
            raise UsageError(f"--set {entry.name}.{key}: {entry.name} has no argument {key!r}; "
                             f"its arguments: {', '.join(accepted) or 'none'}")
    keys = list(arguments)
    given = [[checked_value(entry.cls, k, v)
              for v in (arguments[k] if isinstance(arguments[k], list) else [arguments[k]])]
             for k in keys]
    distinct = [[v for i, v in enumerate(values) if v not in values[:i]] for values in given]
    found = []
    for values in itertools.product(*distinct):
        chosen = dict(zip(keys, values, strict=True))
        found.append(dataclasses.replace(entry, name=variant_label(entry.name, chosen),
                                         arguments=tuple(chosen.items())))
    return found


def expand(entries: list[Entry], options: Options | None) -> list[Entry]:
    """``entries`` with every plugin named in ``options`` replaced by its variants."""
    options = options or {}
    result = []
    for entry in entries:
        result += variants(entry, options[entry.name]) if entry.name in options else [entry]
    return result


def check_targets(options: Options | None, selected: Sequence[Entry]) -> None:
    """Every plugin given arguments must be one the run uses."""
    names = {entry.name for entry in selected}
    for plugin in options or {}:
        if plugin not in names:
            raise UsageError(f"--set {plugin}.…: {plugin} is not among this run's attacks and "
                             f"defenses ({', '.join(sorted(names))}); add it or drop the --set")
