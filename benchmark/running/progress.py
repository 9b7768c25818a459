"""Rich progress bars: the whole matrix, and the step within the current cell."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Two bars, overall and current; does nothing when disabled (the Python API's default)."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        ) if enabled else None
        self._overall: TaskID | None = None
        self._current: TaskID | None = None

    def __enter__(self) -> RunProgress:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()

    def overall(self, total: int) -> None:
        if self._progress:
            self._overall = self._progress.add_task("matrix", total=total)

    def step(self, description: str, total: int) -> None:
        """Start a new current task (training a defense, or one cell)."""
        if not self._progress:
            return
        if self._current is not None:
            self._progress.remove_task(self._current)
        self._current = self._progress.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._progress and self._current is not None:
            self._progress.advance(self._current, amount)

    def cell_done(self) -> None:
        if self._progress and self._overall is not None:
            self._progress.advance(self._overall)

    def log(self, message: str) -> None:
        if self._progress:
            self._progress.console.log(message)


class Stopwatch:
    """Seconds per phase of a run, for the manifest's ``phases`` and the summary ``bench run``
    prints: where the time went, measured, not guessed. A phase may have parts (training per
    defense, cells per attack)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.parts: dict[str, dict[str, float]] = {}

    def add(self, phase: str, seconds: float, part: str | None = None) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        if part is not None:
            parts = self.parts.setdefault(phase, {})
            parts[part] = parts.get(part, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def record(self) -> dict[str, Any]:
        """``{phase: seconds}``, with ``{phase}_by`` holding the parts where there are some."""
        found: dict[str, Any] = {}
        for phase, seconds in self.seconds.items():
            found[phase] = round(seconds, 1)
            if phase in self.parts:
                found[f"{phase}_by"] = {part: round(s, 1) for part, s in sorted(
                    self.parts[phase].items(), key=lambda item: -item[1])}
        return found


def phase_summary(phases: dict[str, Any], wall: float) -> str:
    """One line: each phase's seconds (its three largest parts), largest first."""
    shown = []
    for phase, seconds in sorted(((k, v) for k, v in phases.items()
                                  if not k.endswith("_by")), key=lambda item: -item[1]):
        parts = phases.get(f"{phase}_by", {})
        detail = ", ".join(f"{part} {s:.0f}" for part, s in list(parts.items())[:3])
        shown.append(f"{phase} {seconds:.0f} s" + (f" ({detail})" if detail else ""))
    return f"time: {' · '.join(shown)}; wall {wall:.0f} s"
