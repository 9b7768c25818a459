"""Errors the user can fix. The CLI prints them as one line and exits 2."""

from __future__ import annotations

import errno
import os
from pathlib import Path

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
PATH_MAX = 4096  # bytes in a whole path on Linux


class BenchError(Exception):
    """A problem the user can fix (bad input, missing data); never a bug in bench."""

    exit_code = 2


class UsageError(BenchError):
    """Bad command-line or API arguments."""


class PluginUnavailable(ImportError):
    """Raised by a plugin module at import when an optional dependency it needs is missing:
    the plugin is listed as unavailable with this message (how to install what it needs), and
    is neither a failure nor a warning in runs."""


class PluginLoadError(BenchError):
    """A plugin failed to load while --strict-plugins (or strict=True) was asked for."""


class Interrupted(BenchError):
    """Ctrl-C (or a plugin raising KeyboardInterrupt) before the run began: nothing was run."""

    exit_code = 130


def path_problem(text: str | os.PathLike[str]) -> str | None:
    """What is wrong with a path the user gave, whatever it is for, in words; None if nothing
    is: empty (``Path('')`` would be the current folder), longer than file systems allow
    (OSError 36 later, a traceback), or running into a symlink loop (which every existence
    check would call missing)."""
    text = os.fspath(text)
    if not text:
        return "the path is empty; name a folder or file (. for the current folder)"
    size = len(os.fsencode(text))
    if size > PATH_MAX:
        return f"the path is {size} bytes long; file systems allow {PATH_MAX}: choose a shorter one"
    for name in Path(text).parts:
        if len(os.fsencode(name)) > NAME_MAX:
            return (f"the name {name[:20]}… is {len(os.fsencode(name))} bytes long; file "
                    f"systems allow {NAME_MAX}: choose a shorter name")
    try:
        os.stat(text)
    except OSError as exc:  # a missing path is for the command to judge; a loop never works
        if exc.errno == errno.ELOOP:
            return f"{text} runs into a symlink loop; name a real folder or file"
    return None
