"""Plugin discovery: entry points of the ``advbench.plugins`` group, each loaded on its own.

A plugin that fails to import, to validate or to register is recorded as a failure (``bench
list`` shows it) and the others still load; ``strict=True`` makes the first failure fatal.
Set ``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` to load only bench's own plugins (tests do), and
``BENCH_PLUGINS=mod1,mod2`` to load extra plugin modules by import name.

With ``catalog=True`` (the default) a module not shipped with bench is first read by the plugin
catalog (:mod:`.catalog`), in a process of its own: one that registers only attacks and defenses
is never imported here (they are declared classes, run in processes of their own); one that
also registers a dataset or a model is.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

import pluggy

from advbench import hookspecs
from advbench._util import one_line
from advbench.attack import Attack
from advbench.data import Dataset
from advbench.defense import Defense
from advbench.errors import Interrupted, PluginLoadError, PluginUnavailable
from advbench.models import ModelPlugin
from advbench.plugin_system.integrity import Snapshot
from advbench.plugin_system.registry import Failure, Registry, Source

OWN_DISTRIBUTION = "advbench"
HOOK_KINDS = {
    "bench_attacks": ("attack", Attack),
    "bench_defenses": ("defense", Defense),
    "bench_datasets": ("dataset", Dataset),
    "bench_models": ("model", ModelPlugin),
}


def autoload_enabled() -> bool:
    return os.environ.get("BENCH_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")


def distribution_of(module_name: str) -> tuple[str, str]:
    """The installed distribution providing a top-level module, or ('local', '-')."""
    from importlib.metadata import packages_distributions

    names = packages_distributions().get(module_name.split(".")[0], [])
    for name in names:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return "local", "-"


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """What a plugin prints while it loads goes to stderr, from Python or straight to file
    descriptor 1: stdout may be ``bench list --json``."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # None, full, closed
        sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # a closed stdout or stderr: Python's level only
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


class Loader:
    """Builds a :class:`Registry` from plugins, isolating each plugin's failures."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.sources: dict[str, Source] = {}
        self.registry = Registry()
        self.snapshot = Snapshot.take()  # before any plugin runs a line
        # Modules left to the catalog: their source, how to load them here, and the catalog's
        # description of them (an entry point or a module name).
        self.deferred: list[tuple[Source, Callable[[], object], dict[str, str]]] = []
        self.declared: list[tuple[Source, list[dict[str, Any]]]] = []

    def tampered(self, source: Source, when: str) -> bool:
        """Whether the plugin changed bench's grading code (:mod:`.integrity`) ``when``;
        if so the change is undone and the plugin recorded as failed."""
        changed = self.snapshot.restore()
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more"
                                              if len(changed) > 3 else "")
            self.fail(source, f"changed bench's grading code {when} ({shown}): refused, and "
                      "the change undone")
        return bool(changed)

    def fail(self, source: Source, error: str) -> None:
        if self.strict:
            raise PluginLoadError(f"plugin {source} failed: {error}")
        self.registry.failures.append(Failure(source, error))

    def register(self, plugin: object, source: Source) -> None:
        if self.manager.is_registered(plugin):  # the same module named twice: load it once
            return
        try:
            self.manager.register(plugin, name=source.plugin)
            self.manager.check_pending()
        except Exception as exc:
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            self.fail(source, one_line(exc))
            return
        if not self.manager.get_hookcallers(plugin):  # loads, but adds nothing: say so
            self.manager.unregister(plugin)
            self.fail(source, "defines no bench hook; mark a function named bench_attacks, "
                      "bench_defenses, bench_datasets or bench_models with @advbench.hookimpl")
            return
        self.sources[source.plugin] = source

    def load_entry_points(self, autoload: bool, catalog: bool) -> None:
        found = entry_points(group=hookspecs.ENTRY_POINT_GROUP)
        own_first = sorted(found, key=lambda ep: (ep.dist is None
                                                  or ep.dist.name != OWN_DISTRIBUTION, ep.name))
        for ep in own_first:
            dist = ep.dist.name if ep.dist else "unknown"
            if not autoload and dist != OWN_DISTRIBUTION:
                continue
            source = Source(ep.name, dist, ep.dist.version if ep.dist else "-")
            if catalog and dist != OWN_DISTRIBUTION:
                self.deferred.append((source, ep.load, {**vars(source), "entry_point": "1"}))
            else:
                self.load_one(source, ep.load)

    def load_modules(self, names: Iterable[str], catalog: bool) -> None:
        for name in names:
            source = Source(name, *distribution_of(name))
            load = functools.partial(importlib.import_module, name)
            if catalog and source.distribution != OWN_DISTRIBUTION:
                self.deferred.append((source, load, {**vars(source), "module": name}))
            else:
                self.load_one(source, load)

    def read_deferred(self) -> None:
        """Have the catalog read the deferred modules: declare the plugins of those whose
        plugins all run elsewhere (attacks, defenses), import the others
        here."""
        if not self.deferred:
            return
        from advbench.plugin_system.catalog import read_plugins

        reports = read_plugins([spec for _, _, spec in self.deferred])
        for (source, load, _), report in zip(self.deferred, reports, strict=True):
            if isinstance(report, str):
                self.fail(source, report)
                continue
            for reason in report.unavailable:
                self.registry.unavailable.append(Failure(source, reason))
            if report.declarable:
                for reason in report.failures:
                    self.fail(source, reason)
                if report.declared:
                    self.declared.append((source, report.declared))
            else:  # it registers what runs here: a dataset or a model
                self.load_one(source, load)

    def register_declared(self) -> None:
        """The attacks and defenses the catalog declared, after every plugin loaded here
        (bench's own names first)."""
        from advbench.plugin_system.declared import DeclarationError, declared_class

        for source, declarations in self.declared:
            for decl in declarations:
                try:
                    cls = declared_class(decl)
                except DeclarationError as exc:
                    name = decl.get("name") if isinstance(decl, dict) else None
                    self.fail(source, f"its plugin {name!r} is declared wrongly: {exc}")
                    continue
                error = self.registry.add(decl["kind"], cls, source)
                if error:
                    self.fail(source, error)

    def load_one(self, source: Source, load: Callable[[], object]) -> None:
        """Import one plugin module and register it; a plugin whose optional dependency is
        missing is listed as unavailable, any other failure (``sys.exit()`` at import too) is
        recorded, never raised. What it prints goes to stderr: stdout may be ``--json``.
        Ctrl-C (or a plugin raising KeyboardInterrupt) stops bench, naming the plugin."""
        try:
            with stdout_to_stderr():
                plugin = load()
        except PluginUnavailable as exc:
            self.registry.unavailable.append(Failure(source, str(exc)))
            return
        except SystemExit as exc:
            self.fail(source, f"{one_line(exc)} (the module called sys.exit() at import)")
            return
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while importing plugin {source}: nothing was "
                              "run") from None
        except BaseException as exc:  # GeneratorExit too: a plugin's failure
            if not self.tampered(source, "at import"):
                self.fail(source, one_line(exc))
            return
        if not self.tampered(source, "at import"):
            self.register(plugin, source)

    def collect(self, only: str | None = None) -> Registry:
        """Call every hook implementation (of plugin ``only``, if given) on its own and
        register the classes it returns."""
        for hook_name, (kind, base) in HOOK_KINDS.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                if only is not None and impl.plugin_name != only:
                    continue
                source = self.sources[impl.plugin_name]
                try:
                    with stdout_to_stderr():
                        classes = list(impl.function())
                except KeyboardInterrupt:
                    raise Interrupted(f"interrupted in {hook_name}() of plugin {source}: "
                                      "nothing was run") from None
                except BaseException as exc:  # SystemExit too
                    if not self.tampered(source, f"in {hook_name}()"):
                        self.fail(source, f"{hook_name}() raised {one_line(exc)}")
                    continue
                if self.tampered(source, f"in {hook_name}()"):
                    continue
                for cls in classes:
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        self.fail(source, f"{hook_name}() returned {cls!r}, not a subclass of "
                                          f"{base.__name__}")
                        continue
                    error = overrides_gate(cls) or self.registry.add(kind, cls, source)
                    if error:
                        self.fail(source, error)
        return self.registry


def overrides_gate(cls: type) -> str | None:
    """An attack class that replaces ``Attack.perturb`` (``@final`` binds type checkers
    only) would grade itself: refused, whatever its ``run`` does. The harness calls the base
    class's ``perturb`` in any case."""
    if issubclass(cls, Attack) and cls.perturb is not Attack.perturb:
        return (f"{cls.__name__} overrides Attack.perturb, the harness's gate; write the attack "
                "in run() and leave perturb to the harness")
    return None


def load_registry(
    *, strict: bool = False, extra: Iterable[object] = (), autoload: bool | None = None,
    catalog: bool = True,
) -> Registry:
    """Discover every plugin. ``extra`` registers plugin objects directly, in this process
    (tests use it). ``catalog``: read modules not shipped with bench in the plugin catalog's
    process first, so that those registering only attacks and defenses never
    run here (False, as ``--isolation none`` does: import them all here, to run their plugins
    in-process)."""
    loader = Loader(strict)
    loader.load_entry_points(autoload_enabled() if autoload is None else autoload, catalog)
    env_modules = [m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(",") if m.strip()]
    loader.load_modules(env_modules, catalog)
    loader.read_deferred()
    for index, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", f"extra-{index}")
        loader.register(plugin, Source(name, "local", "-"))
    registry = loader.collect()
    loader.register_declared()
    return registry
