"""Errors the user can fix. The CLI prints them as one line and exits 2."""


class BenchError(Exception):
    """A problem the user can fix (bad input, missing data); never a bug in bench."""

    exit_code = 2


class UsageError(BenchError):
    """Bad command-line or API arguments."""


class PluginLoadError(BenchError):
    """A plugin failed to load while --strict-plugins (or strict=True) was asked for."""
