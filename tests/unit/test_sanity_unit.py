"""Each sanity flag, provoked by a sample defense or attack built to trip it."""

from __future__ import annotations

import pytest

from advbench import load_registry

# ------------------------------------------------ the battery's comparisons, on made-up cells

def cells_of(*rows):
    """One defense's cells at L∞ 0.1 (test split, 100 samples): (attack, access, single_step,
    robust accuracy[, per-sample robust outcome])."""
    import pandas as pd

    records = []
    for attack, access, single, accuracy, *samples in rows:
        record = dict(attack=attack, access=access, single_step=single, norm="linf", eps=0.1,
                      split="test", n_samples=100, robust_accuracy=accuracy,
                      clean_accuracy=0.9)
        if samples:
            record["robust_samples"] = samples[0]
        records.append(record)
    return pd.DataFrame(records)


def flagged_attacks(cells, text):
    from advbench.reporting.sanity import cell_flags

    return {cells.loc[i, "attack"] for i, found in cell_flags(cells).items()
            if any(text in flag for flag in found)}


def test_black_box_is_compared_with_the_strongest_white_box_attack():
    honest = cells_of(("fgsm", "gradient", True, 0.60), ("pgd-linf", "gradient", False, 0.50),
                      ("apgd-ce", "gradient", False, 0.38), ("random-search", "scores", False,
                                                             0.42))
    # Random search beats fixed-step PGD, not APGD: no gradient masking to report.
    assert flagged_attacks(honest, "black-box attack beats") == set()
    masked = cells_of(("pgd-linf", "gradient", False, 0.50), ("apgd-ce", "gradient", False,
                                                              0.45),
                      ("random-search", "scores", False, 0.30))
    assert flagged_attacks(masked, "black-box attack beats") == {"random-search"}


def test_black_box_check_uses_the_per_sample_white_box_worst_case_when_given():
    # Two white-box attacks each leave 60 of 100 robust but break different samples: together
    # they leave 20 (samples 40-59). A black-box attack leaving 40 (samples 0-39) beats each
    # alone, and it broke all 20 that both missed: AutoAttack's per-sample check counts them.
    first = [True] * 60 + [False] * 40
    second = [False] * 40 + [True] * 60
    black = [True] * 40 + [False] * 60
    cells = cells_of(("pgd-linf", "gradient", False, 0.60, first),
                     ("apgd-ce", "gradient", False, 0.60, second),
                     ("random-search", "scores", False, 0.40, black))
    assert flagged_attacks(cells, "broke 20 samples every white-box attack missed") == {
        "random-search"}
    # Without per-sample outcomes only the totals are compared: 0.40 < 0.60 - slack.
    assert flagged_attacks(cells.drop(columns="robust_samples"),
                           "black-box attack beats every white-box one") == {"random-search"}


def planted(broken_after_white: int, cascade: bool):
    """100 samples: fgsm breaks 0-29, apgd-ce 20-59 (robust to both: 60-99); random search
    breaks 0-9 and, of 60-99, the first ``broken_after_white``. In a cascade the rows are
    cumulative (robust to the attack and every one before it)."""
    fgsm = [i >= 30 for i in range(100)]
    apgd = [not 20 <= i < 60 for i in range(100)]
    search = [i >= 10 and not 60 <= i < 60 + broken_after_white for i in range(100)]
    if cascade:
        apgd = [a and b for a, b in zip(fgsm, apgd, strict=True)]
        search = [a and b for a, b in zip(apgd, search, strict=True)]
    rows = [("fgsm", "gradient", True, fgsm), ("apgd-ce", "gradient", False, apgd),
            ("random-search", "scores", False, search)]
    cells = cells_of(*[(name, access, single, sum(mask) / 100, mask)
                       for name, access, single, mask in rows])
    if cascade:
        cells["cascade"] = ["fgsm", "fgsm > apgd-ce", "fgsm > apgd-ce > random-search"]
    return cells


@pytest.mark.parametrize("cascade", [False, True], ids=["full-matrix", "cascade"])
def test_black_box_breaking_what_every_white_box_attack_missed_is_counted(cascade):
    """AutoAttack's check in both modes, per sample: random search breaking 3 of the 40
    samples both white-box attacks missed is flagged with the count, even in the full matrix
    where its own row (0.87 robust) is far above the white-box worst case (0.40); 2 are within
    the slack."""
    text = ("after every white-box attack of the cascade, black-box attacks broke 3 more "
            "samples" if cascade else "a black-box attack broke 3 samples every white-box "
            "attack missed")
    assert flagged_attacks(planted(3, cascade), text) == {"random-search"}
    assert flagged_attacks(planted(13, cascade), "broke 13") == {"random-search"}
    assert flagged_attacks(planted(2, cascade), "gradient masking") == set()
    assert flagged_attacks(planted(0, cascade), "gradient masking") == set()


def test_a_minimum_norm_attack_alone_does_not_make_black_box_breaks_gradient_masking():
    """At L0 one pixel the only white-box attack is FMN-L0, a minimum-norm attack: pixel-scan
    breaking 20 samples it left robust is not gradient masking (FMN-L0's own check reports its
    weakness); beside a fixed-ε white-box attack the same breaks are flagged."""
    fmn = [i >= 10 for i in range(100)]
    scan = [i >= 30 for i in range(100)]
    cells = cells_of(("fmn-l0", "gradient", False, 0.90, fmn),
                     ("pixel-scan", "scores", False, 0.70, scan))
    cells["minimum_norm"] = [True, False]
    assert flagged_attacks(cells, "gradient masking") == set()
    fixed = cells_of(("fmn-l0", "gradient", False, 0.90, fmn),
                     ("pgd-l0", "gradient", False, 0.90, fmn),
                     ("pixel-scan", "scores", False, 0.70, scan))
    fixed["minimum_norm"] = [True, False, False]
    assert flagged_attacks(fixed, "broke 20 samples every white-box attack missed") == {
        "pixel-scan"}


def test_in_a_cascade_without_per_sample_outcomes_the_rows_difference_is_the_count():
    """Cascade rows are cumulative: random search after APGD leaving 0.35 where APGD's chain
    left 0.38 broke 3 samples of 100 every white-box attack missed (AutoAttack's check)."""
    cells = cells_of(("apgd-ce", "gradient", False, 0.38), ("random-search", "scores", False,
                                                             0.35))
    cells["cascade"] = ["apgd-ce", "apgd-ce > random-search"]
    assert flagged_attacks(cells, "broke 3 more samples (gradient masking?)") == {
        "random-search"}
    cells.at[1, "robust_accuracy"] = 0.37  # one sample: within the slack of two
    assert flagged_attacks(cells, "gradient masking") == set()


def test_apgd_attacks_are_iterative_for_the_single_step_check():
    registry = load_registry()
    for name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        assert not registry.get("attack", name).cls.single_step
    assert registry.get("attack", "fgsm").cls.single_step
    cells = cells_of(("fgsm", "gradient", True, 0.50), ("apgd-ce", "gradient", False, 0.30),
                     ("apgd-t", "gradient", False, 0.58))
    # APGD-T weaker than FGSM by more than the slack is flagged; APGD-CE, stronger, is not.
    assert flagged_attacks(cells, "single-step attack beats") == {"apgd-t"}
