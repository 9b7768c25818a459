"""Executors: a pool of processes and Ray give the results the in-process run gives, and a
worker that dies mid-cell costs a retry, never a lost or doubled cell."""

from __future__ import annotations

import pytest

from advbench.errors import UsageError
from advbench.running.executors import get_executor


@pytest.mark.parametrize("name, workers, message", [
    ("dask", None, "--executor 'dask': choose local, processes or ray"),
    ("processes", 0, "--workers must be a positive integer"),
])
def test_bad_executor_options_are_usage_errors(name, workers, message):
    with pytest.raises(UsageError, match=message):
        get_executor(name, workers)
