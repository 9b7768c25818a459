"""The typed registry of plugin classes: one namespace per kind, duplicates refused."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from advbench.errors import UsageError

KINDS = ("attack", "defense", "dataset", "model")


@dataclass(frozen=True)
class Source:
    """Where a plugin class came from: the entry point (or module) and its distribution."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    cls: Any  # the plugin's class (a model given by --model: a factory of one)
    source: Source
    # Arguments the user set (``--set``); a variant's name carries them (see
    # advbench.plugin_system.options).
    arguments: tuple[tuple[str, Any], ...] = ()

    def capabilities(self) -> dict[str, Any]:
        """The class attributes that say what the plugin can do (for ``bench list``)."""
        keys = ("norms", "access", "targeted", "randomized", "num_classes", "shape")
        found = {key: getattr(self.cls, key) for key in keys if hasattr(self.cls, key)}
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in found.items()}


@dataclass(frozen=True)
class Failure:
    """A plugin that could not be loaded or registered, with the one-line reason."""

    source: Source
    error: str


@dataclass
class Registry:
    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    failures: list[Failure] = field(default_factory=list)
    unavailable: list[Failure] = field(default_factory=list)  # optional dependency missing

    def add(self, kind: str, cls: type[Any], source: Source) -> str | None:
        """Register ``cls``; return an error message instead when it cannot be."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            return f"{getattr(cls, '__name__', cls)!s} has no 'name' class attribute"
        existing = self.entries[kind].get(name)
        if existing is not None:
            return f"duplicate {kind} name {name!r}: registered by {existing.source} and {source}"
        self.entries[kind][name] = Entry(name, kind, cls, source)
        return None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            raise UsageError(unknown_name_message(kind, name, self.names(kind))) from None

    def resolve(self, kind: str, spec: str | Sequence[str]) -> list[Entry]:
        """``all`` (sorted by name), a comma-separated string, or a list of names."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [name.strip() for name in names if name.strip()]
        if not names:
            raise UsageError(f"no {kind} named; available: {', '.join(self.names(kind))}")
        if names == ["all"]:
            return [self.entries[kind][name] for name in self.names(kind)]
        return [self.get(kind, name) for name in dict.fromkeys(names)]


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} Available: {', '.join(available) or 'none'}"
