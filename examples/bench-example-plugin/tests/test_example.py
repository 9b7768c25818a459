"""The example plugins pass bench's conformance kit and do what their docstrings say."""

from __future__ import annotations

import pytest
import torch
from advbench import AttackContext, Oracle, ThreatModel, load_registry
from advbench.conformance import attack_checks, check_attack, check_defense, defense_checks

from bench_example_plugin import gaussian_noise, input_quantization, trades
from bench_example_plugin.gaussian_noise import GaussianNoise
from bench_example_plugin.input_quantization import InputQuantization, quantize

ATTACK_RULES = dict(attack_checks(GaussianNoise))
DEFENSE_RULES = dict(defense_checks(InputQuantization))


@pytest.mark.parametrize("rule", ATTACK_RULES)
def test_attack_conformance(rule):
    ATTACK_RULES[rule]()


@pytest.mark.parametrize("rule", DEFENSE_RULES)
def test_defense_conformance(rule):
    DEFENSE_RULES[rule]()


def test_the_kit_in_one_call():
    check_attack(GaussianNoise, params={"draws": 3})
    check_defense(InputQuantization, params={"levels": 2})


def test_the_hooks_register_every_plugin():
    registry = load_registry(autoload=False, extra=[gaussian_noise, input_quantization, trades])
    assert registry.get("attack", "gaussian-noise").cls is GaussianNoise
    assert registry.get("defense", "input-quantization").cls is InputQuantization
    assert registry.get("defense", "trades").cls is trades.Trades
    assert registry.failures == []


def constant_model(label: int) -> torch.nn.Module:
    """A linear model that always predicts ``label`` (zero weights, one positive bias)."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    torch.nn.init.zeros_(model[1].weight)
    with torch.no_grad():
        model[1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), 3).float())
    return model.eval()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_noise_lies_on_the_sphere_and_every_draw_is_charged(norm):
    x = torch.full((5, 1, 4, 4), 0.5)
    threat = ThreatModel(norm, 0.2)
    oracle = Oracle(constant_model(0), "decision", 5)  # never fooled: all draws are spent
    ctx = AttackContext(torch.Generator().manual_seed(0))
    x_adv = GaussianNoise(draws=4).run(oracle, x, torch.zeros(5, dtype=torch.long), threat, ctx)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    torch.testing.assert_close(size, torch.full((5,), 0.2))
    if norm == "linf":
        assert bool((delta.abs() == delta.abs().amax()).all())  # every pixel at ±ε: a corner
    assert oracle.queries.tolist() == [4] * 5


def test_a_fooled_sample_stops_querying():
    x = torch.full((3, 1, 4, 4), 0.5)
    oracle = Oracle(constant_model(1), "decision", 3)  # every label 1 ≠ 0: fooled at once
    ctx = AttackContext(torch.Generator().manual_seed(0))
    GaussianNoise(draws=10).run(oracle, x, torch.zeros(3, dtype=torch.long),
                                ThreatModel("l2", 0.5), ctx)
    assert oracle.queries.tolist() == [1, 1, 1]


def test_quantization_rounds_to_the_grid_and_masks_gradients():
    x = torch.tensor([0.0, 0.1, 0.49, 0.51, 0.9, 1.0])
    assert quantize(x, 3).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    wrapped = InputQuantization(levels=4).wrap(model)
    images = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    grad, logits = Oracle(wrapped, "gradient", 6).gradient(images, torch.zeros(6, dtype=torch.long))
    torch.testing.assert_close(logits, model(quantize(images, 4)).detach())
    assert bool((grad == 0).all())  # the masking the sanity battery is there to catch


def test_levels_below_two_are_refused():
    with pytest.raises(ValueError, match="levels"):
        InputQuantization(levels=1)
