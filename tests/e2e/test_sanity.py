"""Each sanity flag, provoked by a sample defense or attack built to trip it."""

from __future__ import annotations

import pytest
import sample_plugins

from advbench import load_registry, run_matrix

SMALL = dict(preset="smoke", n_train=2000, n_eval=150)


@pytest.fixture(scope="module")
def flagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    registry = load_registry(extra=[sample_plugins])
    frame = run_matrix(
        attacks="fgsm,weak-at-large-eps,fake-iterative,score-random-sign",
        defenses="none,quantized,noisy-logits", registry=registry,
        eps={"linf": [0.0, 0.05, 0.2, 1.0]}, out=root / "out", cache_dir=root / "cache",
        **SMALL)
    return frame, root / "out"


def flags_of(frame, defense, attack=None, eps=None):
    rows = frame[frame["defense"] == defense]
    if attack is not None:
        rows = rows[rows["attack"] == attack]
    if eps is not None:
        rows = rows[rows["eps"] == eps]
    return " | ".join(rows["flags"].fillna(""))


def test_clean_defense_raises_no_false_alarm_on_honest_attacks(flagged):
    frame, _ = flagged
    assert flags_of(frame, "none", "fgsm") == " | ".join([""] * 4)
    assert frame[frame["defense"] == "none"]["zero_grad_fraction"].max() < 0.05


def test_rising_with_eps(flagged):
    assert "rises with ε" in flags_of(flagged[0], "none", "weak-at-large-eps", 0.2)


def test_single_step_beating_iterative(flagged):
    assert "single-step attack beats" in flags_of(flagged[0], "none", "fake-iterative", 0.2)


def test_unbounded_attack_not_reaching_zero(flagged):
    assert "unbounded attack" in flags_of(flagged[0], "none", "fake-iterative", 1.0)
    assert "unbounded attack" not in flags_of(flagged[0], "none", "fgsm", 1.0)


def test_zero_gradients_and_black_box_beating_white_box(flagged):
    frame, _ = flagged
    assert "input gradients are zero" in flags_of(frame, "quantized", "fgsm")
    assert "samples every white-box attack missed (gradient masking?)" in flags_of(
        frame, "quantized", "score-random-sign", 0.2)


def test_randomness_detected_eot_used_and_its_noise_not_an_attack(flagged):
    """Issue #26: a randomized defense is graded by the mean of 8 draws and an unchanged input
    keeps its clean prediction, so ε = 0 equals clean accuracy even for noisy logits."""
    frame, _ = flagged
    noisy = frame[frame["defense"] == "noisy-logits"]
    assert (noisy["eot_samples"] == 8).all() and (noisy["prediction_draws"] == 8).all()
    assert "randomized defense" in flags_of(frame, "noisy-logits", "fgsm")
    assert "ε=0 differs" not in flags_of(frame, "noisy-logits", eps=0.0)
    zero = noisy[noisy["eps"] == 0]
    assert (zero["robust_accuracy"] == zero["clean_accuracy"]).all()


def test_flags_show_in_the_leaderboard(flagged):
    board = (flagged[1] / "leaderboard.md").read_text()
    assert "⚠" in board and "input gradients are zero" in board


# ------------------------------------------------ the battery's comparisons, on made-up cells
