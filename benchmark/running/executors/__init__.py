"""Where the tasks of a run execute: ``base`` holds the executor contract with the in-process
and process-pool executors, ``ray`` the Ray one (imported only when asked for). Internal: the
names ``get_executor`` knows are the only stable way to choose one (``--executor``,
``run_matrix(executor=NAME)``)."""

from __future__ import annotations

import os

from advbench.errors import UsageError
from advbench.running.executors.base import Executor, LocalExecutor, Outcome, ProcessExecutor

__all__ = ["Executor", "LocalExecutor", "Outcome", "ProcessExecutor", "get_executor"]


def get_executor(name: str, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor named on the command line."""
    if name == "local":
        return LocalExecutor()
    if name == "processes":
        return ProcessExecutor(workers if workers is not None else os.cpu_count() or 1)
    if name == "ray":
        from advbench.running.executors.ray import RayExecutor

        return RayExecutor(address)
    raise UsageError(f"--executor {name!r}: choose local, processes or ray")
