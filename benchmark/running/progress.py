"""Rich progress bars: the whole matrix, and the step within the current cell."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
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
        self._overall = None
        self._current = None

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
