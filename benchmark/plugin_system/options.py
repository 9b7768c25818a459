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
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from advbench.errors import UsageError
from advbench.plugin_system.registry import Entry

Options = Mapping[str, Mapping[str, Any]]  # plugin → argument → a value or a list of values
INT64 = (-(2**63), 2**63 - 1)  # what torch, numpy and parquet hold
BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
          "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}
MAX_SHOWN = 60  # characters of a user's value echoed in a message


def argument(default: Any, *, ge: float | None = None, gt: float | None = None,
             le: float | None = None, lt: float | None = None) -> Any:
    """A plugin's dataclass field with bounds the harness checks on every value a user gives
    it (``--set``, ``run_matrix(options=...)``) before anything runs: ``steps: int =
    argument(20, ge=0)``. Plain ``field(default=..., metadata={"ge": 0})`` works the same."""
    bounds = {key: value for key, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt))
              if value is not None}
    return dataclasses.field(default=default, metadata=bounds)


def shown(text: Any) -> str:
    """A user's value for a one-line message: its repr, cut to ``MAX_SHOWN`` characters."""
    text = repr(text) if not isinstance(text, str) else text
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


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


def plain(value: Any) -> bool:
    """Whether a parsed value is one a manifest can store: JSON scalars and lists of them."""
    if isinstance(value, (list, tuple)):
        return all(plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def parse_value(text: str) -> Any:
    """A JSON or Python literal (0.5, 10, true, [0, 1], "x"); anything else is a string.
    Brackets nested past what a parser can hold are a usage error, not a RecursionError."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (RecursionError, MemoryError):
            raise UsageError(f"value {shown(text)} is nested too deeply; give a flat value "
                             "or a list") from None
        except Exception:  # not this kind of literal: try the next parser
            continue
        if plain(value):
            return value
    return text


def parse_set(specs: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """``["pgd-linf.steps=10,40", ...]`` → ``{"pgd-linf": {"steps": [10, 40]}}``. A key given
    twice is refused: the last one would silently win."""
    options: dict[str, dict[str, list[Any]]] = {}
    for spec in specs:
        target, sep, values = spec.partition("=")
        names = target.strip().split(".")
        if not sep or len(names) != 2 or not all(names) or not values.strip():
            raise UsageError(f"--set {shown(spec)}: expected PLUGIN.KEY=VALUE[,VALUE...], e.g. "
                             "--set gaussian-smoothing.sigma=0.25,0.5")
        plugin, key = names
        if key in options.get(plugin, {}):
            raise UsageError(f"--set {plugin}.{key} is given twice; give every value once: "
                             f"--set {plugin}.{key}=V1,V2")
        try:
            parsed = [parse_value(v.strip()) for v in split_top_level(values)]
        except UsageError as exc:
            raise UsageError(f"--set {plugin}.{key}: {exc}") from None
        options.setdefault(plugin, {})[key] = parsed
    return options


def format_set(options: Options) -> list[str]:
    """The ``--set`` arguments that give ``options`` back (what ``parse_set`` reads)."""
    return [f"{plugin}.{key}=" + ",".join(json.dumps(v) for v in
                                          (values if isinstance(values, list) else [values]))
            for plugin, keys in options.items() for key, values in keys.items()]


def arguments_of(cls: type[Any]) -> list[str]:
    """The arguments a plugin class accepts: its dataclass fields that take a value."""
    if not dataclasses.is_dataclass(cls):
        return []
    return [f.name for f in dataclasses.fields(cls) if f.init]


def describe(hint: Any) -> str:
    """A type annotation in words, for messages."""
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(describe(arg) for arg in get_args(hint))
    if get_origin(hint) in (tuple, list, Sequence):
        return f"a list of {describe(get_args(hint)[0]).split(' ', 1)[-1]}s" \
            if get_args(hint) else "a list"
    if get_origin(hint) in (dict, Mapping):
        key, item = (describe(arg).split(" ", 1)[-1] for arg in get_args(hint))
        item = item.replace("list", "lists", 1) if item.startswith("list") else item + "s"
        return f"a mapping from {key}s to {item}"
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(arg) for arg in get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "null", Path: "a path"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def coerce(value: Any, hint: Any) -> Any:
    """``value`` as the annotation ``hint`` asks (an int where a float goes becomes a float, a
    list where a tuple goes a tuple); TypeError if it is not of that type."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return coerce(value, arg)
            except TypeError:
                continue
        raise TypeError(hint)
    if origin is Literal and value in args:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value) + 0.0  # -0.0 becomes 0.0: a name never reads "=-0"
        except OverflowError:
            raise TypeError(hint) from None
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is Path and isinstance(value, (str, Path)):
        return value
    if origin in (tuple, list, Sequence) and isinstance(value, (list, tuple)):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise TypeError(hint)
            return tuple(coerce(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        items = [coerce(v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        key, item = args or (Any, Any)
        return {coerce(k, key): coerce(v, item) for k, v in value.items()}
    if origin is None and isinstance(hint, type) and hint not in (float, int, Path) \
            and isinstance(value, hint):
        return value
    raise TypeError(hint)


def numbers_in(value: Any) -> list[int | float]:
    """Every number in a value (a list's items too), bools aside."""
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in numbers_in(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def bound_problem(key: str, value: Any, metadata: Mapping[str, Any]) -> str | None:
    """Why ``value`` breaks the field's bounds (or is not finite, or overflows int64); None if
    it does not."""
    for number in numbers_in(value):
        if isinstance(number, float) and not math.isfinite(number):
            return f"{key} must be a finite number"
        if isinstance(number, int) and not INT64[0] <= number <= INT64[1]:
            return (f"{key} must fit in a signed 64-bit integer: from {INT64[0]:,} up to "
                    f"{INT64[1]:,}")
        for name, (sign, holds) in BOUNDS.items():
            if name in metadata and not holds(number, metadata[name]):
                return f"{key} must be {sign} {metadata[name]}"
    return None


def field_hint(cls: type[Any], spec: dataclasses.Field[Any]) -> Any:
    """A field's annotation, resolved; the type of its default when it cannot be resolved."""
    try:
        return typing.get_type_hints(cls)[spec.name]
    except Exception:  # an annotation naming what its module cannot see
        default = spec.default
        return Any if default is None or default is dataclasses.MISSING else type(default)


def checked_value(cls: type[Any], key: str, value: Any) -> Any:
    """``value`` checked against the argument's annotation and bounds, converted as the
    annotation asks; a usage error naming the expected type or the broken bound otherwise."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == key)
    hint = field_hint(cls, spec)
    label = f"--set {cls.name}.{key}={shown(value)}"
    try:
        value = coerce(value, hint)
    except TypeError:
        like = "" if spec.default is dataclasses.MISSING else f", like its default {spec.default!r}"
        raise UsageError(f"{label}: expected {describe(hint)}{like}") from None
    problem = bound_problem(key, value, spec.metadata)
    if problem:
        raise UsageError(f"{label}: {problem}")
    return value


def default_problems(cls: type[Any]) -> list[str]:
    """Fields whose own default breaks their bounds (for the plugin kit and tests)."""
    if not dataclasses.is_dataclass(cls):
        return []
    return [f"{f.name}: {problem}" for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
            and (problem := bound_problem(f.name, f.default, f.metadata))]


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
