"""The published leaderboard is generated from the raw results committed beside it."""

from __future__ import annotations

from pathlib import Path

from advbench.cli import main

FOLDER = Path(__file__).resolve().parent.parent / "leaderboard"


def test_published_leaderboard_regenerates_identically(tmp_path):
    regenerated = tmp_path / "README.md"
    assert main(["leaderboard", str(FOLDER / "results.csv"), "--manifest",
                 str(FOLDER / "manifest.json"), "--out", str(regenerated)]) == 0
    assert regenerated.read_text() == (FOLDER / "README.md").read_text()
