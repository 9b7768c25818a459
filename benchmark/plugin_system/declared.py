"""Attack and defense classes known by their declarations: their module never runs in the harness.

The plugin catalog (:mod:`.catalog`) imports a third-party module in a process of its own and
reports each attack or defense class as a declaration: plain JSON (its name, class attributes,
presets, code hash, and each field with its default, bounds and type in a small grammar). Here
the harness builds a :class:`DeclaredAttack` or :class:`DeclaredDefense` from it: a dataclass with
the same fields and class attributes, so that ``--set`` is checked, presets apply, the matrix is
planned and the caches are keyed as for the real class; but none of the plugin's code runs here.
What the real class makes of its arguments (``config()``, ``max_queries``) is asked of it at plan
time (:func:`resolve_declared`); an attack runs in the attack process, which builds the real
class (:meth:`Declared.real`); a defense trains in a training process
(:mod:`advbench.running.remote_training`), which sends back the trained weights as plain tensors;
a defense that wraps its model (``wrap``, ``bpda_surrogate``) has its classifier served from a
model server (:mod:`advbench.running.served`), which the harness queries as attacks query it.
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
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import torch

from advbench.attack import Attack, AttackContext
from advbench.data import Split
from advbench.defense import DatasetInfo, Defense, TrainContext, TrainSettings
from advbench.oracle import Oracle
from advbench.threat import NORMS, ThreatModel

if typing.TYPE_CHECKING:
    from torch import nn

    from advbench.running.served import ModelServer

ACCESS = ("gradient", "scores", "decision")
FLAGS = ("targeted", "randomized", "single_step", "against_randomized", "minimum_norm")
# Class attributes and methods a declared class has itself: no field may take their names.
RESERVED = frozenset({"name", "norms", "access", "description", "presets", "declared",
                      "resolved", "run", "config", "perturb", "figures", "preset_epochs",
                      "wrapper_fields", "context", "history", "fit", "wrap", "training_loss",
                      "trained", "bpda_surrogate", "wraps", "surrogate", *FLAGS})
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
    if not isinstance(decl, dict) or decl.get("kind") not in ("attack", "defense"):
        raise DeclarationError("not a declaration")
    strings = ("name", "module", "qualname", "description", "code")
    if not all(isinstance(decl.get(key), str) for key in strings) or not decl["name"]:
        raise DeclarationError("a name or module that is not a string")
    presets = decl.get("presets")
    if not isinstance(presets, dict) or not plain(presets) \
            or not all(isinstance(v, dict) for v in presets.values()):
        raise DeclarationError("presets must map preset names to arguments")
    fields = decl.get("fields")
    if not isinstance(fields, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and f["name"].isidentifier()
            and not f["name"].startswith("_") and f["name"] not in RESERVED
            and plain(f.get("default")) and isinstance(f.get("bounds"), dict)
            and plain(f["bounds"]) for f in fields):
        raise DeclarationError("fields must each have a name (not a class attribute's), a "
                               "plain default and bounds")
    return checked_attack(decl) if decl["kind"] == "attack" else checked_defense(decl)


def checked_attack(decl: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(decl.get("access"), str) or decl["access"] not in ACCESS:
        raise DeclarationError(f"access {decl.get('access')!r}: not one of {', '.join(ACCESS)}")
    norms = decl.get("norms")
    if not isinstance(norms, list) or not norms or not all(n in NORMS for n in norms):
        raise DeclarationError(f"norms {norms!r}: expected some of {', '.join(NORMS)}")
    if not all(isinstance(decl.get(flag), bool) for flag in FLAGS):
        raise DeclarationError(f"flags {', '.join(FLAGS)} must be booleans")
    queries = decl.get("max_queries")
    if not (queries is None or queries == "computed" or type(queries) is int):
        raise DeclarationError("max_queries must be an integer, null or computed")
    return decl


def checked_defense(decl: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(decl.get("randomized"), bool):
        raise DeclarationError("randomized must be a boolean")
    epochs = decl.get("preset_epochs")
    if not isinstance(epochs, dict) or not all(type(v) is int and v >= 1
                                               for v in epochs.values()):
        raise DeclarationError("preset_epochs must map preset names to epochs (>= 1)")
    wrapper = decl.get("wrapper_fields")
    if not isinstance(wrapper, list) or not all(isinstance(f, str) for f in wrapper):
        raise DeclarationError("wrapper_fields must be field names")
    if not all(isinstance(decl.get(flag), bool) for flag in ("wraps", "surrogate")):
        raise DeclarationError("wraps and surrogate must be booleans")
    return decl


class DeclaredMeta(type):
    """The metaclass of declared classes, so that pickling one (an executor sending a plan to
    its workers) carries its declaration, not a reference to a module."""


class Declared(metaclass=DeclaredMeta):
    """What declared attacks and defenses share: their arguments, and what the real class
    made of them (``resolved``, filled at plan time by :func:`resolve_declared`)."""

    declared: ClassVar[dict[str, Any]] = {}
    # canonical JSON of the arguments → {"config": ..., "max_queries": ...} or {"error": ...}
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

    def real(self) -> Any:
        """The real plugin, built where it may run (see :func:`rebuild`)."""
        decl = type(self).declared
        return rebuild(decl["module"], decl["qualname"], self.arguments())


class DeclaredAttack(Declared, Attack):
    """An attack the harness knows by its declaration. Its instances stand for the real
    class's in planning, keys and rows; the attack process turns them into the real class's."""

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


class DeclaredDefense(Declared, Defense):
    """A defense known by its declaration: it trains in a training process, and the harness
    loads the weights it sends back into its own copy of the model. Its ``wrap`` is the
    identity where the real class's is; otherwise the real ``wrap`` (and ``bpda_surrogate``)
    run in a model server, and the harness attacks a stand-in that queries it."""

    def resolved_training_config(self, ctx: TrainContext) -> dict[str, Any]:
        """The real class's, for this run (asked once per context of a process)."""
        from advbench.plugin_system.catalog import resolve_training

        decl = type(self).declared
        key = canonical({"class": [decl["module"], decl["qualname"], decl["code"]],
                         "arguments": self.arguments(), "ctx": context_json(ctx)})
        found = TRAINING_CONFIGS.get(key)
        if found is None:
            found = TRAINING_CONFIGS[key] = resolve_training(decl, self.arguments(),
                                                             context_json(ctx))
        if "error" in found:
            raise RuntimeError(found["error"])
        return dict(found["config"])

    def fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        """The real class's ``fit``, in a training process; its weights loaded into ``model``."""
        from advbench.running.remote_training import fit_remotely

        history = fit_remotely(type(self).declared, self.arguments(), model, train,
                               context_json(ctx), ctx.on_batch)
        object.__setattr__(self, "history", None if history is None else Kept(history))
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The real ``wrap(model)``, served (the model itself where the real class's ``wrap``
        returns it: then the harness attacks its own copy)."""
        from advbench.running.served import served

        if not type(self).declared["wraps"]:
            return model
        server = self.server(model)
        if not server.identity:
            return served(server, "model")
        if not type(self).declared["surrogate"]:
            server.close()  # nothing of it is served
        return model

    def bpda_surrogate(self, model: nn.Module) -> nn.Module | None:
        """The real ``bpda_surrogate(model)``, served from the same process as ``wrap``'s."""
        from advbench.running.served import served

        if not type(self).declared["surrogate"]:
            return None
        server = self.server(model)
        return served(server, "surrogate") if "surrogate" in server.roles else None

    def server(self, model: nn.Module) -> ModelServer:
        """The model server of the real defense around ``model``: one per trained model and
        arguments, started at the first ``wrap`` or ``bpda_surrogate``."""
        from advbench.running.served import ModelServer

        decl = type(self).declared
        key = canonical({"class": [decl["module"], decl["qualname"], decl["code"]],
                         "arguments": self.arguments()})
        found = SERVERS.setdefault(model, {}).get(key)
        if found is None or found.failed is not None:
            found = SERVERS[model][key] = ModelServer(decl, self.arguments(), model)
        return found


TRAINING_CONFIGS: dict[str, dict[str, Any]] = {}  # class, arguments, context → the answer
# trained model → canonical arguments → its model server (dropped with the model)
SERVERS: weakref.WeakKeyDictionary[nn.Module, dict[str, ModelServer]] = \
    weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class Kept:
    """Training curves a declared defense's real class kept, as the plain JSON it sent."""

    curves: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.curves)


def context_json(ctx: TrainContext) -> dict[str, Any]:
    """What a training context says, as JSON (its generator and callback stay here)."""
    dataset = ctx.dataset
    return {"settings": dataclasses.asdict(ctx.settings), "device": str(ctx.device),
            "seed": ctx.seed, "pretrained": ctx.pretrained,
            "threats": [[t.norm, t.eps] for t in ctx.threats],
            "dataset": None if dataset is None else {
                "name": dataset.name, "shape": list(dataset.shape),
                "num_classes": dataset.num_classes, "default_eps": dict(dataset.default_eps)}}


def context_from_json(found: dict[str, Any], on_batch: Callable[[], None] = lambda: None
                      ) -> TrainContext:
    """The training context :func:`context_json` describes, where the defense runs."""
    dataset = found["dataset"]
    return TrainContext(TrainSettings(**found["settings"]), torch.device(found["device"]),
                        found["seed"], pretrained=found["pretrained"], on_batch=on_batch,
                        threats=tuple(ThreatModel(norm, eps) for norm, eps in found["threats"]),
                        dataset=None if dataset is None else DatasetInfo(
                            dataset["name"], tuple(dataset["shape"]), dataset["num_classes"],
                            dataset["default_eps"]))


def canonical(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, default=repr)


CLASSES: dict[str, type[Declared]] = {}  # canonical declaration → its class, per process


def declared_class(decl: Any, resolved: Mapping[str, Any] | None = None) -> type[Declared]:
    """The :class:`DeclaredAttack` or :class:`DeclaredDefense` subclass of a declaration (one
    class per declaration in a process); DeclarationError when the declaration is malformed."""
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
        namespace: dict[str, Any] = {
            "name": decl["name"], "description": decl["description"],
            "presets": decl["presets"], "declared": decl, "resolved": {},
            "__module__": decl["module"]}
        if decl["kind"] == "attack":
            base: type[Declared] = DeclaredAttack
            namespace.update(norms=tuple(decl["norms"]), access=decl["access"],
                             **{flag: decl[flag] for flag in FLAGS})
        else:
            base = DeclaredDefense
            namespace.update(randomized=decl["randomized"],
                             preset_epochs=decl["preset_epochs"],
                             wrapper_fields=frozenset(decl["wrapper_fields"]))
        try:
            cls = dataclasses.make_dataclass(
                decl["qualname"].rpartition(".")[2] or "Declared", fields,
                bases=(base,), namespace=namespace, kw_only=True)
        except (TypeError, ValueError) as exc:  # a field named like a class attribute, say
            raise DeclarationError(f"its fields cannot be declared: {exc}") from None
        cls.__qualname__ = decl["qualname"]  # named as the real class, in keys and messages
        CLASSES[key] = cls
    if resolved:
        cls.resolved.update(resolved)
    return cls


def reduce_class(cls: DeclaredMeta) -> tuple[Any, ...]:
    if cls in (Declared, DeclaredAttack, DeclaredDefense):
        return getattr, (importlib.import_module(__name__), cls.__name__)
    assert issubclass(cls, Declared)
    return declared_class, (cls.declared, dict(cls.resolved))


copyreg.pickle(DeclaredMeta, reduce_class)


def rebuild(module: str, qualname: str, arguments: dict[str, Any]) -> Attack | Defense:
    """The real attack or defense, where it runs (an attack or training process, the catalog):
    its class imported by module and name (which runs the plugin's code there, not in the
    harness), built with the declared arguments."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Attack | Defense)):
        raise TypeError(f"{module}.{qualname} is not an Attack or Defense class")
    plugin: Attack | Defense = found(**arguments)
    return plugin


def resolve_declared(instances: list[Declared]) -> None:
    """Ask the real classes what they make of these instances' arguments (one catalog process
    for all), so that configs and query budgets are theirs; an instance they refuse raises
    their error when built again."""
    from advbench.plugin_system.catalog import resolve

    waiting = {(id(type(a)), canonical(a.arguments())): a for a in instances
               if a.resolution() is None}
    answers = resolve([(type(a).declared, a.arguments()) for a in waiting.values()])
    for plugin, answer in zip(waiting.values(), answers, strict=True):
        type(plugin).resolved[canonical(plugin.arguments())] = answer
