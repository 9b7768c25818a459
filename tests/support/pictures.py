"""Helpers of tests/unit/test_pictures.py and tests/e2e/test_pictures_e2e.py."""

from __future__ import annotations

import matplotlib.image


def assert_png(path, height_at_least: int = 100) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= height_at_least and image.shape[1] >= height_at_least
