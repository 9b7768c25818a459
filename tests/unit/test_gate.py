"""The validity gate catches every way an attack can cheat; the harness grades, not the plugin."""

from __future__ import annotations

import torch

from advbench import ThreatModel, check_adversarial


def test_gate_tolerance_is_tight():
    x = torch.full((2, 1, 4, 4), 0.5)
    threat = ThreatModel("linf", 0.1)
    assert check_adversarial(x, x + 0.1, threat).reason is None
    assert "exceeds eps" in check_adversarial(x, x + 0.1 + 1e-5, threat).reason


def test_l2_gate_measures_the_whole_sample():
    x = torch.full((1, 1, 2, 2), 0.5)
    delta = torch.full_like(x, 0.3)  # L2 norm 0.6, L∞ norm 0.3
    assert check_adversarial(x, x + delta, ThreatModel("l2", 0.6)).reason is None
    assert check_adversarial(x, x + delta, ThreatModel("l2", 0.59)).reason is not None


def test_l0_counts_pixels_not_channels():
    x = torch.zeros(1, 3, 4, 4)
    one_pixel = x.clone()
    one_pixel[0, :, 1, 2] = 1.0
    two_pixels = one_pixel.clone()
    two_pixels[0, 0, 3, 3] = 1.0
    assert check_adversarial(x, one_pixel, ThreatModel("l0", 1)).reason is None
    assert check_adversarial(x, two_pixels, ThreatModel("l0", 1)).reason is not None
