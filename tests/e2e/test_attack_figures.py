"""Attacks that draw figures (pixel-scan's heat map) get them into the run."""

from __future__ import annotations

import pytest

from advbench import run_matrix


@pytest.mark.parametrize("isolation", ["auto", "all"])
def test_pixel_scan_heat_map_is_written_and_linked(tmp_path, isolation):
    """Bench's own attack draws its figures in the harness even when it runs isolated."""
    out = tmp_path / "out"
    frame = run_matrix(attacks="pixel-scan", defenses="none", preset="smoke", n_train=2000,
                       n_eval=40, out=out, cache_dir=tmp_path / "cache", isolation=isolation)
    assert set(frame.dropna(subset=["grading"])["grading"]) == {
        "isolated" if isolation == "all" else "in-process"}
    figure = out / "figures" / "pixel-scan_none_test_l0_1.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figures/pixel-scan_none_test_l0_1.png" in (out / "leaderboard.md").read_text()
