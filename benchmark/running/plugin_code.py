"""A hash of a plugin's own code, for the caches' keys.

A distribution's version says nothing of an editable install (``pip install -e``, as the
plugin guide recommends while writing one): the plugin's author edits the code and keeps the
number. Keying a plugin's cells (and a defense's model) on the source of the module defining
its class, and of the modules of the same top-level package it reaches through its imports,
recomputes exactly what the edit concerns: an edited attack its cells, an edited defense its
model and cells, and nothing of the other plugins of the same distribution. The walk also
enters ``advbench.algorithms``, the algorithms plugins build on (bench's own, FMN or
adversarial training, as any third party's): an edited algorithm retrains the models of the
defenses that use it (the cell cache's key already holds all of bench's source).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import sys
from pathlib import Path

from advbench.plugin_system.declared import Declared


def top_package(name: str) -> str:
    return name.split(".", 1)[0]


SHARED_ALGORITHMS = "advbench.algorithms"


def imported_modules(name: str, source: str, top: str | None = None) -> set[str]:
    """Names of the modules that module ``name`` (its ``source``) imports, ``from`` imports and
    relative ones included, that are loaded and belong to the top-level package ``top`` (by
    default its own) or to ``advbench.algorithms``."""
    top, found = top or top_package(name), set[str]()
    package = name if (file := source_file(name)) and file.name == "__init__.py" else \
        name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                   package) if node.level else node.module
            except (ImportError, ValueError):
                continue
            if base:
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in sys.modules and (
        top_package(module) == top or module.startswith(f"{SHARED_ALGORITHMS}."))}


def source_file(name: str) -> Path | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return Path(path) if path and Path(path).suffix == ".py" and Path(path).is_file() else None


@functools.cache
def plugin_code(cls: type) -> str:
    """A hash of the source files of ``cls``'s module and, transitively, of the modules of the
    same top-level package and of ``advbench.algorithms`` that it imports ("" when the class has
    no source file: built in a session, say, where only the name and version can key it). A
    class the plugin catalog declared: the hash the catalog computed, where the module was
    imported."""
    if issubclass(cls, Declared):
        return str(cls.declared["code"])
    start = sys.modules.get(cls.__module__)
    if start is None or source_file(cls.__module__) is None:
        return ""
    top = top_package(start.__name__)
    seen, waiting, digest = set(), [start.__name__], hashlib.sha256()
    while waiting:
        name = waiting.pop()
        path = source_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        source = path.read_bytes()
        digest.update(name.encode() + b"\0" + source + b"\0")
        try:
            waiting += sorted(imported_modules(name, source.decode(), top) - seen)
        except (SyntaxError, UnicodeDecodeError):  # hashed all the same
            continue
    return digest.hexdigest()[:20]
