"""The conformance kit: every built-in plugin passes it, and it catches each kind of breakage."""

from __future__ import annotations

from support.conformance import broken_rules

from advbench.conformance import (
    attack_checks,
)


def test_every_builtin_attack_passes(registry):
    """bench's own attacks; the library adapters' are checked, at small settings (their
    defaults take hours), by tests/e2e/test_torchattacks_adapter.py and
    tests/e2e/test_art_adapter.py."""
    entries = [entry for entry in registry.resolve("attack", "all")
               if entry.source.plugin not in ("torchattacks-adapter", "art-adapter")]
    assert entries
    failures = [message for entry in entries for message in broken_rules(attack_checks(entry.cls))]
    assert failures == []


# A correct attack and defense, and broken variants of each --------------------------------------
