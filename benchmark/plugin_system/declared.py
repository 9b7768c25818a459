"""Attack classes known by their declarations only, so that their module never runs in the harness.

The plugin catalog (:mod:`.catalog`) imports a third-party attack module in a process of its own
and reports each attack class as a declaration: plain JSON (its name, norms, access, flags,
presets, code hash, and each field with its default, bounds and type in a small grammar). Here
the harness builds a :class:`DeclaredAttack` from it: a dataclass with the same fields and class
attributes, so that ``--set`` is checked, presets apply, the matrix is planned and the cache is
keyed as for the real class; but its ``run`` is never called here. The attack process, where the
attack runs, turns an instance into the real class's, imported by module and name and built with
the same arguments. What its constructor makes of the arguments (``config()``,
``max_queries``) is asked of the real class at plan time (:func:`.catalog.resolve`).
"""

from __future__ import annotations

import copy
import copyreg
import dataclasses
import functools
import importlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from advbench.attack import Attack, AttackContext
from advbench.oracle import Oracle
from advbench.threat import NORMS, ThreatModel

ACCESS = ("gradient", "scores", "decision")
FLAGS = ("targeted", "randomized", "single_step", "against_randomized", "minimum_norm")
# Class attributes a declared class sets itself: no field may take their names.
RESERVED = frozenset({"name", "norms", "access", "description", "presets", "declared",
                      "resolved", "run", "config", "perturb", "figures", *FLAGS})
MAX_DEPTH = 6  # of a field's type: deeper is read as "any value"
SCALARS: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str,
                           "none": type(None), "path": Path, "any": Any}
CONTAINERS: dict[Any, str] = {tuple: "tuple", list: "list", Sequence: "list", dict: "dict",
                              Mapping: "dict"}


class DeclarationError(ValueError):
    """A declaration the harness cannot use: the plugin is refused with this reason."""


def plain(value: Any) -> bool:
    """JSON scalars and lists or string-keyed mappings of them: what a declaration carries."""
    if isinstance(value, (list, tuple)):
        return all(plain(item) for item in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def hint_from_json(spec: Any, depth: int = 0) -> Any:
    """The annotation a grammar entry stands for, built without evaluating any text."""
    if not isinstance(spec, dict) or depth > MAX_DEPTH:
        raise DeclarationError("a field's type is malformed")
    kind, args = spec.get("t"), spec.get("args", [])
    if kind in SCALARS:
        return SCALARS[kind]
    if kind == "literal" and isinstance(spec.get("values"), list) and spec["values"] \
            and plain(spec["values"]):
        return Literal[tuple(spec["values"])]
    if not isinstance(args, list) or not args and kind == "union":
        raise DeclarationError("a field's type is malformed")
    inner = tuple(hint_from_json(arg, depth + 1) for arg in args)
    if kind == "union":
        return Union[inner]  # noqa: UP007 - built from a tuple at run time
    if kind == "list" and len(inner) <= 1:
        if not inner:
            return tuple if spec.get("tuple") else list
        return (types.GenericAlias(tuple, (inner[0], ...)) if spec.get("tuple")
                else types.GenericAlias(list, inner))
    if kind in ("tuple", "dict") and (kind == "tuple" or len(inner) in (0, 2)):
        origin = tuple if kind == "tuple" else dict
        return types.GenericAlias(origin, inner) if inner else origin
    raise DeclarationError("a field's type is malformed")


def checked(decl: Any) -> dict[str, Any]:
    """``decl`` if it is a declaration the harness can use; DeclarationError otherwise."""
    if not isinstance(decl, dict):
        raise DeclarationError("not a declaration")
    strings = ("name", "module", "qualname", "access", "description", "code")
    if not all(isinstance(decl.get(key), str) for key in strings) or not decl["name"]:
        raise DeclarationError("a name, module or access that is not a string")
    if decl["access"] not in ACCESS:
        raise DeclarationError(f"access {decl['access']!r}: not one of {', '.join(ACCESS)}")
    norms = decl.get("norms")
    if not isinstance(norms, list) or not norms or not all(n in NORMS for n in norms):
        raise DeclarationError(f"norms {norms!r}: expected some of {', '.join(NORMS)}")
    if not all(isinstance(decl.get(flag), bool) for flag in FLAGS):
        raise DeclarationError(f"flags {', '.join(FLAGS)} must be booleans")
    presets = decl.get("presets")
    if not isinstance(presets, dict) or not plain(presets) \
            or not all(isinstance(v, dict) for v in presets.values()):
        raise DeclarationError("presets must map preset names to arguments")
    queries = decl.get("max_queries")
    if not (queries is None or queries == "computed" or type(queries) is int):
        raise DeclarationError("max_queries must be an integer, null or computed")
    fields = decl.get("fields")
    if not isinstance(fields, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and f["name"].isidentifier()
            and not f["name"].startswith("_") and f["name"] not in RESERVED
            and plain(f.get("default")) and isinstance(f.get("bounds"), dict)
            and plain(f["bounds"]) for f in fields):
        raise DeclarationError("fields must each have a name (not a class attribute's), a "
                               "plain default and bounds")
    return decl


class DeclaredMeta(type):
    """The metaclass of declared attack classes, so that pickling one (an executor sending a
    plan to its workers) carries its declaration, not a reference to a module."""


class DeclaredAttack(Attack, metaclass=DeclaredMeta):
    """An attack the harness knows by its declaration. Its instances stand for the real
    class's in planning, keys and rows; the attack process turns them into the real class's
    (:meth:`real`)."""

    declared: ClassVar[dict[str, Any]] = {}
    # What the real class made of each set of arguments: canonical JSON of the arguments →
    # {"config": ..., "max_queries": ...} (filled at plan time by the catalog).
    resolved: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        found = self.resolution()
        if found is not None and "error" in found:  # the real class refused these arguments
            raise ValueError(found["error"])

    def arguments(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name)
                for spec in dataclasses.fields(typing.cast(Any, self))}

    def resolution(self) -> dict[str, Any] | None:
        return type(self).resolved.get(canonical(self.arguments()))

    def config(self) -> dict[str, Any]:
        """The real class's ``config()`` for these arguments (its fields until resolved)."""
        found = self.resolution()
        return dict(found["config"]) if found and "config" in found else self.arguments()

    @property
    def max_queries(self) -> int | None:
        """The real class's budget for these arguments: the one the harness enforces."""
        found = self.resolution()
        if found is not None and "max_queries" in found:
            return typing.cast(int | None, found["max_queries"])
        declared = type(self).declared.get("max_queries")
        if declared == "computed":  # never guessed: a wrong budget would grade the cell wrong
            raise RuntimeError(f"{self.name}'s query budget depends on its arguments and was "
                               "not resolved by the plugin catalog (build_plan resolves it)")
        return typing.cast(int | None, declared)

    def run(self, oracle: Oracle, x: Any, y: Any, threat: ThreatModel,
            ctx: AttackContext) -> Any:
        raise RuntimeError(f"{self.name} was read by the plugin catalog and runs in an attack "
                           "process only; run with --isolation auto or all, or load the "
                           "registry with catalog=False to run it in-process")

    def real(self) -> Attack:
        """The real attack, in the attack process (see :func:`rebuild`)."""
        decl = type(self).declared
        return rebuild(decl["module"], decl["qualname"], self.arguments())


def canonical(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, default=repr)


CLASSES: dict[str, type[DeclaredAttack]] = {}  # canonical declaration → its class, per process


def declared_class(decl: Any, resolved: Mapping[str, Any] | None = None) -> type[DeclaredAttack]:
    """The :class:`DeclaredAttack` subclass of a declaration (one class per declaration in a
    process); DeclarationError when the declaration is malformed."""
    decl = checked(decl)
    key = canonical(decl)
    cls = CLASSES.get(key)
    if cls is None:
        fields = []
        for spec in decl["fields"]:
            hint, default = hint_from_json(spec["hint"]), spec["default"]
            fresh = functools.partial(copy.deepcopy, default)  # a list or dict: one per instance
            value: Any = (dataclasses.field(default_factory=fresh, metadata=spec["bounds"])
                          if isinstance(default, (list, dict))
                          else dataclasses.field(default=default, metadata=spec["bounds"]))
            fields.append((spec["name"], hint, value))
        namespace = {"name": decl["name"], "norms": tuple(decl["norms"]),
                     "access": decl["access"], "description": decl["description"],
                     "presets": decl["presets"], "declared": decl, "resolved": {},
                     "__module__": decl["module"], **{flag: decl[flag] for flag in FLAGS}}
        try:
            cls = dataclasses.make_dataclass(
                decl["qualname"].rpartition(".")[2] or "Declared", fields,
                bases=(DeclaredAttack,), namespace=namespace, kw_only=True)
        except (TypeError, ValueError) as exc:  # a field named like a class attribute, say
            raise DeclarationError(f"its fields cannot be declared: {exc}") from None
        cls.__qualname__ = decl["qualname"]  # named as the real class, in keys and messages
        CLASSES[key] = cls
    if resolved:
        cls.resolved.update(resolved)
    return cls


def reduce_class(cls: DeclaredMeta) -> tuple[Any, ...]:
    if cls is DeclaredAttack:
        return getattr, (importlib.import_module(__name__), "DeclaredAttack")
    assert issubclass(cls, DeclaredAttack)
    return declared_class, (cls.declared, dict(cls.resolved))


copyreg.pickle(DeclaredMeta, reduce_class)


def rebuild(module: str, qualname: str, arguments: dict[str, Any]) -> Attack:
    """The real attack, in the attack process: its class imported by module and name (which
    runs the plugin's code there, not in the harness), built with the declared arguments."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Attack)):
        raise TypeError(f"{module}.{qualname} is not an Attack class")
    attack: Attack = found(**arguments)
    return attack


def resolve_declared(instances: list[DeclaredAttack]) -> None:
    """Ask the real classes what they make of these instances' arguments (one catalog process
    for all), so that configs and query budgets are theirs; an instance they refuse raises
    their error when built again."""
    from advbench.plugin_system.catalog import resolve

    waiting = {(id(type(a)), canonical(a.arguments())): a for a in instances
               if a.resolution() is None}
    answers = resolve([(type(a).declared, a.arguments()) for a in waiting.values()])
    for attack, answer in zip(waiting.values(), answers, strict=True):
        type(attack).resolved[canonical(attack.arguments())] = answer
