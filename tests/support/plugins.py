"""Helpers of tests/unit/test_plugins.py and tests/e2e/test_plugins_e2e.py."""

from __future__ import annotations

MODULES = {
    "fake_good": """
        from dataclasses import dataclass
        from advbench import Attack, hookimpl

        @dataclass(kw_only=True)
        class Noop(Attack):
            name = "noop"
            norms = ("linf",)
            def run(self, oracle, x, y, threat, ctx):
                return x

        @hookimpl
        def bench_attacks():
            return [Noop]
    """,
    "fake_broken": "raise ImportError('missing dependency: unobtainium')",
    "fake_duplicate": """
        from advbench import Attack, hookimpl

        class AnotherFGSM(Attack):
            name = "fgsm"
            norms = ("linf",)

        @hookimpl
        def bench_attacks():
            return [AnotherFGSM]
    """,
    "fake_misspelled": """
        from advbench import hookimpl

        @hookimpl
        def bench_atacks():
            return []
    """,
    "fake_wrong_type": """
        from advbench import hookimpl

        @hookimpl
        def bench_defenses():
            return [int]
    """,
}
