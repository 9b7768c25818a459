"""Helpers of tests/unit/test_conformance.py and tests/e2e/test_conformance_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator

from advbench.conformance import (
    Check,
    ConformanceError,
)


def broken_rules(checks: Iterator[tuple[str, Check]]) -> list[str]:
    """Every rule a class breaks (not just the first), as the kit's one-line messages."""
    failures = []
    for _, check in checks:
        try:
            check()
        except ConformanceError as exc:
            failures.append(str(exc))
    return failures
