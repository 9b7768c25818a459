"""An edited plugin recomputes exactly what it concerns (issue #26, point 4): cells and models
are keyed on the plugin's own source, not only on its distribution's version, which an editable
install keeps while its author fixes the code."""

from __future__ import annotations

from advbench.running.plugin_code import plugin_code


def test_the_code_hash_follows_the_package_not_other_distributions():
    from advbench_plugins.fgsm import FGSM
    from advbench_plugins.pgd_linf import PGDLinf

    assert plugin_code(FGSM) and plugin_code(FGSM) != plugin_code(PGDLinf)
    assert plugin_code(type("Made", (), {"__module__": "no.such.module"})) == ""
