"""Helpers of tests/e2e/test_art_adapter.py and tests/unit/test_art_adapter_unit.py."""

from __future__ import annotations

import advbench_plugins.art_adapter as aa

# Small settings, so each test takes seconds; ART's defaults are the presets' business.
FAST = {"art-cw-l2": {"binary_search_steps": 2, "max_iter": 4, "initial_const": 1.0},
        "art-deepfool": {"max_iter": 10},
        "art-elastic-net": {"binary_search_steps": 2, "max_iter": 8, "initial_const": 1.0},
        "art-square": {"max_iter": 30},
        "art-hopskipjump": {"max_iter": 2, "max_eval": 50, "init_eval": 10, "init_size": 20},
        "art-boundary": {"max_iter": 20, "num_trial": 4, "sample_size": 4, "init_size": 20}}


BY_NAME = {cls.name: cls for cls in aa.ADAPTED}
