"""Errors the user can fix. The CLI prints them as one line and exits 2."""


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
