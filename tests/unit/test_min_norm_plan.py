"""Minimum-norm attacks in a cascade's plan (#28): how the plan recognizes them
(``Attack.minimum_norm``), where they stand in a chain (last, skipping nothing) and how the
worst case's cascade column names them apart. No data, no training."""

from __future__ import annotations

import dataclasses

import pytest

from advbench import Attack, load_registry
from advbench.conformance import ConformanceError, check_attack_attributes
from advbench.reporting.aggregate import chain_text
from advbench.running.plan import Cell, cascade_rank, chains, minimum_norm, outside_chain
from advbench.threat import ThreatModel

MINIMUM_NORM = {"fmn-l0", "fmn-l1", "fmn-l2", "fmn-linf", "fab-l2", "fab-linf", "fab-t"}
FIXED_EPS = {"fgsm", "fgm", "pgd-linf", "pgd-l2", "apgd-ce", "apgd-dlr", "apgd-t",
             "random-search", "one-pixel", "pixel-scan"}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_the_built_in_fmn_and_fab_plugins_declare_themselves_minimum_norm(registry):
    assert Attack.minimum_norm is False
    for name in MINIMUM_NORM:
        entry = registry.get("attack", name)
        assert entry.cls.minimum_norm is True and minimum_norm(entry), name
    for name in FIXED_EPS:
        entry = registry.get("attack", name)
        assert entry.cls.minimum_norm is False and not minimum_norm(entry), name
    assert not minimum_norm(None)  # a worst case's cell has no attack


def test_minimum_norm_attacks_rank_after_every_chained_attack(registry):
    none, smoothing = registry.get("defense", "none"), registry.get("defense", "gaussian-smoothing")
    last = max(cascade_rank(registry.get("attack", name), none) for name in FIXED_EPS)
    for name in MINIMUM_NORM:
        attack = registry.get("attack", name)
        assert cascade_rank(attack, none) > last
        # Against a randomized defense, chained: an iterative gradient attack, as PGD.
        assert cascade_rank(attack, smoothing) == cascade_rank(attack) == cascade_rank(
            registry.get("attack", "pgd-linf"), smoothing)


def test_a_minimum_norm_cell_skips_nothing_whatever_the_chain_fooled(registry):
    defense = registry.get("defense", "none")
    threat = ThreatModel("linf", 0.1)
    fmn = Cell(defense, registry.get("attack", "fmn-linf"), threat, "test")
    pgd = Cell(defense, registry.get("attack", "pgd-linf"), threat, "test")
    # How the scheduler's chain hands a cell the samples its earlier cells fooled:
    assert dataclasses.replace(fmn, skip=(0, 3, 7)).skip == ()
    assert Cell(defense, fmn.attack, threat, "test", skip=(1,)).skip == ()
    assert dataclasses.replace(pgd, skip=(0, 3, 7)).skip == (0, 3, 7)


def test_against_a_randomized_defense_a_minimum_norm_attack_stays_in_the_chain(registry):
    """There each of its steps is a gradient under EOT: it runs on what the chain left."""
    smoothing, none = registry.get("defense", "gaussian-smoothing"), registry.get("defense", "none")
    assert smoothing.cls.randomized and not none.cls.randomized
    fmn, pgd = registry.get("attack", "fmn-l2"), registry.get("attack", "pgd-l2")
    assert outside_chain(none, fmn)
    assert not outside_chain(smoothing, fmn) and not outside_chain(none, pgd)
    assert not outside_chain(none, None)
    cell = Cell(smoothing, fmn, ThreatModel("l2", 1.5), "test")
    assert dataclasses.replace(cell, skip=(2, 5)).skip == (2, 5)


def test_a_cascade_plans_the_minimum_norm_cells_at_the_end_of_their_chain(registry):
    """In a chain the minimum-norm cells come last: what they break can feed no skip to a
    chained attack (the next cells are minimum-norm ones, which skip nothing)."""
    defense = registry.get("defense", "none")
    threat = ThreatModel("linf", 0.1)
    names = ["fmn-linf", "pgd-linf", "fab-linf", "fgsm", "random-search"]
    cells = [Cell(defense, registry.get("attack", name), threat, "test") for name in names]
    cells.sort(key=lambda cell: cascade_rank(cell.attack, cell.defense))
    [chain] = chains(cells)
    assert [cell.attack_name for cell in chain] == [
        "fgsm", "pgd-linf", "random-search", "fmn-linf", "fab-linf"]


@pytest.mark.parametrize(("text", "expected"), [
    ("fgsm > pgd-linf > fmn-linf", "fgsm > pgd-linf (+ fmn-linf on every sample)"),
    ("fgsm > pgd-linf > random-search > fmn-linf > fab-linf",
     "fgsm > pgd-linf > random-search (+ fmn-linf, fab-linf on every sample)"),
    ("fgsm > pgd-linf", "fgsm > pgd-linf"),  # no minimum-norm attack: as the scheduler gave it
    ("fmn-linf > fab-linf", ""),  # nothing chained, nothing skipped: not a cascade's row
    ("", ""),  # no cascade
])
def test_the_worst_cases_cascade_column_names_the_minimum_norm_attacks_apart(text, expected):
    assert chain_text(text, {"fmn-linf", "fab-linf"}) == expected


def test_the_conformance_kit_wants_minimum_norm_a_bool(registry):
    base = registry.get("attack", "fmn-linf").cls
    broken = type("Broken", (base,), {"minimum_norm": "yes"})
    with pytest.raises(ConformanceError, match="'minimum_norm' must be a bool"):
        check_attack_attributes(broken)
    check_attack_attributes(base)
