"""The torchattacks adapter: every adapted attack runs a gated cell, pays for each model call
through the oracle, keeps to its access level, and passes the conformance kit."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

pytest.importorskip("torchattacks")


import advbench_plugins.torchattacks_adapter as ta
from advbench.adapters import nearest, project_l0
from advbench.errors import UsageError
from advbench.plugin_system.loader import load_registry
from advbench.plugin_system.options import arguments_of, checked_value
from advbench.threat import ThreatModel, perturbation_size, project

BY_NAME = {cls.name: cls for cls in ta.ADAPTED}


def test_every_spec_is_registered_through_the_entry_point(registry):
    for cls in ta.ADAPTED:
        entry = registry.get("attack", cls.name)
        assert entry.source.plugin == "torchattacks-adapter"
        assert entry.source.distribution == "advbench"
    assert len(ta.ADAPTED) >= 12


def test_missing_torchattacks_is_one_line_in_the_listing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import torchattacks now fails
    monkeypatch.delitem(sys.modules, "advbench_plugins.torchattacks_adapter")
    registry = load_registry()
    assert registry.failures == []  # a missing optional dependency is no failure
    missing = {f.source.plugin: f.error for f in registry.unavailable}
    message = "the ta-* attacks need torchattacks: pip install 'advbench[torchattacks]'"
    assert missing == {"torchattacks-adapter": message}
    assert not [name for name in registry.names("attack") if name.startswith("ta-")]
    assert "fgsm" in registry.names("attack")
    from advbench.cli import main
    assert main(["list"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"unavailable torchattacks-adapter: {message}" in out
    assert "ta-cw" not in out
    with pytest.raises(ImportError, match="advbench.torchattacks"):
        importlib.import_module("advbench_plugins.torchattacks_adapter")


def test_subset_calls_are_charged_to_the_nearest_clean_image(batch):
    x = batch[0][:20]
    pick = torch.tensor([7, 2, 2, 11, 0])
    noisy = (x[pick] + 0.1 * torch.randn(x[pick].shape).sign()).clamp(0, 1)
    assert nearest(noisy.flatten(1), x.flatten(1), "linf").tolist() == pick.tolist()
    assert nearest(noisy.flatten(1), x.flatten(1), "l2").tolist() == pick.tolist()


def test_l0_projection_keeps_the_most_changed_pixels():
    delta = torch.zeros(1, 3, 4, 4)
    delta[0, :, 0, 0], delta[0, 0, 1, 1], delta[0, 2, 3, 3] = 0.5, 0.9, 0.1
    kept = project_l0(delta, 2)
    assert perturbation_size(kept, "l0").item() == 2
    assert kept[0, :, 0, 0].tolist() == [0.5] * 3 and kept[0, 0, 1, 1] == 0.9
    assert kept[0, 2, 3, 3] == 0


def test_l0_projection_takes_a_count_per_sample_and_is_the_threat_models():
    """FMN-L0 gives each sample its own budget; ``project`` on an L0 threat keeps ε pixels."""
    delta = torch.zeros(3, 2, 3, 3)
    delta[:, 0, 0, 0], delta[:, 1, 1, 1], delta[:, 0, 2, 2] = 0.3, 0.2, -0.1
    kept = project_l0(delta, torch.tensor([0, 1, 2]))
    assert perturbation_size(kept, "l0").tolist() == [0, 1, 2]
    assert kept[2, 1, 1, 1] == 0.2 and kept[2, 0, 2, 2] == 0 and kept[1, 0, 0, 0] == 0.3
    assert torch.equal(project(delta, ThreatModel("l0", 1)), project_l0(delta, 1))


def test_arguments_are_upstreams_and_typed():
    assert checked_value(BY_NAME["ta-cw"], "c", 10) == 10.0
    assert checked_value(BY_NAME["ta-square"], "n_queries", 300) == 300
    with pytest.raises(UsageError, match="ta-square.loss"):
        checked_value(BY_NAME["ta-square"], "loss", "hinge")
    with pytest.raises(UsageError, match="ta-cw.steps"):
        checked_value(BY_NAME["ta-cw"], "steps", -1)
    assert "eps" not in arguments_of(BY_NAME["ta-pgd"])  # ε is the harness's
    assert BY_NAME["ta-square"](n_queries=10).max_queries == 13
