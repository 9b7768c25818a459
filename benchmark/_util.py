"""Helpers every layer of bench shares: an exception in one line, a file written whole, how a child
process ended and where its prints go.

A leaf module: it imports nothing from advbench, so public and internal modules alike may use it
without one layer reaching into another (``tests/unit/test_layout.py`` checks both). Not public API:
plugins keep their own.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``, for errors shown in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file in the same folder, then rename: never half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def death(code: int) -> str:
    """How a child process ended (its return code), in words."""
    if code >= 0:
        return f"exited with code {code}"
    import signal

    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def stderr_fd() -> int:
    """Where a child process's prints go: bench's stderr (stdout may be ``--json``), or file
    descriptor 2 where ``sys.stderr`` is captured or replaced by an object without one."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return 2
