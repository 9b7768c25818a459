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


def test_the_code_hash_follows_the_shared_algorithms_a_plugin_imports():
    """bench's built-in defenses train through ``advbench.algorithms``: their model keys must
    change with it, or an edited algorithm would serve models the old code trained. The walk
    enters the algorithms, not the rest of bench (the harness)."""
    import importlib
    from pathlib import Path

    from advbench.running.plugin_code import imported_modules

    def imports(name: str, top: str | None = None) -> set[str]:
        module = importlib.import_module(name)
        return imported_modules(name, Path(module.__file__).read_text(), top)

    assert "advbench.algorithms.fmn" in imports("advbench_plugins.fmn_l2")
    assert "advbench.algorithms.adversarial_training" in imports("advbench_plugins.adv_train_pgd")
    from_fmn = imports("advbench.algorithms.fmn", "advbench_plugins")
    assert "advbench.algorithms.minimum_norm" in from_fmn
    assert "advbench.attack" not in from_fmn and "advbench.threat" not in from_fmn
