"""The plugin catalog: plugin modules not shipped with bench are imported in a process of their own.

The catalog process (:mod:`.catalog_process`) reads a request on stdin and answers on a file
descriptor, one JSON line at a time:

- ``load``: import each plugin module named (an entry point or a ``BENCH_PLUGINS`` module), call
  its hooks, and report per module what it registered: the kinds, each attack class as a
  declaration (:mod:`.declared`), and its failures, as the harness's loader would record them;
- ``resolve``: build attack or defense classes with given arguments and report what each made
  of them (``config()``, an attack's ``max_queries``) or why it refused them;
- ``training``: a defense's ``resolved_training_config`` for a run's training context.

The loader (``load_registry(catalog=True)``, the default except under ``--isolation none``)
keeps every module that registers only attacks and defenses out of the harness: they are
declared classes (:mod:`.declared`); attacks run in attack processes, defenses train in training
processes and a defense's ``wrap`` runs in a model server (:mod:`advbench.running.served`). A
module that also registers a dataset or a model is imported in the harness as before, since
those run there (under the integrity snapshot).
A module that hangs or kills the catalog process costs that module only: it is recorded as
failed, and a new catalog process reads the modules after it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from advbench._util import death, stderr_fd
from advbench.errors import Interrupted

MODULE_SECONDS = 120.0  # to import one plugin module and call its hooks, or build one attack
START_SECONDS = 60.0  # for the process to start (Python, torch and bench imported) besides
LINE_LIMIT = 4 << 20  # bytes of one reported line


@dataclass
class Report:
    """What one plugin module registered, as the catalog process saw it: the kinds, the
    declarations of its attacks and defenses, and its failures."""

    kinds: list[str] = field(default_factory=list)
    declared: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def declarable(self) -> bool:
        """Whether nothing of the module need run in the harness: attacks and defenses (a
        dataset or a model runs there)."""
        return set(self.kinds) <= {"attack", "defense"}


# ---- the harness's side ----

def lines(request: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Run catalog processes over the items of ``request`` and yield, per item, its answer
    or, where an item hung or ended the process, the reason; the next process starts after
    that item."""
    start, count = 0, len(request["items"])
    while start < count:
        for index, answer in one_process({**request, "start": start}):
            yield index, answer
            start = index + 1


def one_process(request: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """One catalog process from item ``request["start"]``: each item's answer, until one
    fails it (then that item's reason, last)."""
    read, write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "advbench.plugin_system.catalog_process", str(write)],
        pass_fds=[write], stdin=subprocess.PIPE, stdout=stderr_fd(), start_new_session=True)
    os.close(write)
    current, answered = request["start"], request["start"] - 1
    try:
        assert process.stdin is not None
        try:
            with process.stdin:
                process.stdin.write(json.dumps(request).encode())
        except BrokenPipeError:  # it died before reading: said below, by its exit code
            pass
        for line in read_lines(read):
            message = parse(line) if line is not None else None
            if message is None:
                yield current, ("it hung the plugin catalog process (no answer in "
                                f"{MODULE_SECONDS:.0f} s)" if line is None else
                                "the plugin catalog process answered nonsense for it")
                return
            if "at" in message and message["at"] == answered + 1:
                current = message["at"]
            elif message.get("item") == current and current > answered:
                answered = current
                yield current, message
        code = process.wait()
        if answered + 1 < len(request["items"]):  # it left before answering them all
            yield answered + 1, (f"it ended the plugin catalog process ({death(code)})"
                                 if code else "the plugin catalog process stopped early")
    finally:
        os.close(read)
        if process.poll() is None:
            process.kill()
        process.wait()


def read_lines(fd: int) -> Iterator[bytes | None]:
    """Lines from ``fd`` until its end; then None when none comes within ``MODULE_SECONDS``,
    or an empty line when one runs past ``LINE_LIMIT``, and nothing more."""
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + START_SECONDS + MODULE_SECONDS
        while True:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                yield None
                return
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                deadline = time.monotonic() + MODULE_SECONDS
                yield line
            if len(buffer) > LINE_LIMIT:
                yield b""  # not JSON: nonsense
                return


def parse(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def read_plugins(specs: Sequence[dict[str, str]]) -> list[Report | str]:
    """Each plugin module's :class:`Report`, or the reason the catalog could not read it.
    ``specs``: ``{"plugin", "distribution", "version"}`` and ``"entry_point"`` (load that
    entry point) or ``"module"`` (import that module). A plugin that raised KeyboardInterrupt
    stops bench, as in-process (:class:`~advbench.errors.Interrupted`)."""
    found: list[Report | str] = ["the plugin catalog process did not answer"] * len(specs)
    request = {"op": "load", "path": sys.path, "items": list(specs)}
    for index, answer in lines(request):
        if isinstance(answer, str):
            found[index] = answer
            continue
        if isinstance(answer.get("interrupted"), str):
            raise Interrupted(answer["interrupted"])
        try:
            report = Report(**{key: answer[key] for key in
                               ("kinds", "declared", "failures", "unavailable")})
            reasons = report.failures + report.unavailable
            if not (isinstance(report.declared, list)
                    and all(isinstance(v, str) for v in reasons + report.kinds)):
                raise TypeError
            found[index] = report
        except (KeyError, TypeError):
            found[index] = "the plugin catalog process answered nonsense for it"
    return found


def resolve(instances: Sequence[tuple[dict[str, Any], dict[str, Any]]]
            ) -> list[dict[str, Any]]:
    """For each (declaration, arguments): what the real class built with those arguments
    makes of them, ``{"config": ...}`` (and an attack's ``"max_queries"``), or
    ``{"error": reason}``."""
    found: list[dict[str, Any]] = [{"error": "the plugin catalog process did not answer"}
                                   for _ in instances]
    items = [{"module": decl["module"], "qualname": decl["qualname"], "arguments": arguments}
             for decl, arguments in instances]
    request = {"op": "resolve", "path": sys.path, "items": items}
    for index, answer in lines(request):
        if isinstance(answer, str):
            found[index] = {"error": answer}
        elif "error" in answer and isinstance(answer["error"], str):
            found[index] = {"error": answer["error"]}
        elif isinstance(answer.get("config"), dict) and (
                answer.get("max_queries") is None or type(answer.get("max_queries")) is int):
            found[index] = {"config": answer["config"]}
            if "max_queries" in answer:  # an attack's
                found[index]["max_queries"] = answer["max_queries"]
        else:
            found[index] = {"error": "the plugin catalog process answered nonsense for it"}
    return found


def resolve_training(decl: dict[str, Any], arguments: dict[str, Any], ctx: dict[str, Any]
                     ) -> dict[str, Any]:
    """A declared defense's ``resolved_training_config`` for a run's context (JSON): what its
    real class returns, ``{"config": ...}``, or ``{"error": reason}``."""
    item = {"module": decl["module"], "qualname": decl["qualname"], "arguments": arguments,
            "ctx": ctx}
    for _, answer in lines({"op": "training", "path": sys.path, "items": [item]}):
        if isinstance(answer, str):
            return {"error": answer}
        if isinstance(answer.get("error"), str):
            return {"error": answer["error"]}
        if isinstance(answer.get("config"), dict):
            return {"config": answer["config"]}
    return {"error": "the plugin catalog process answered nonsense for it"}
