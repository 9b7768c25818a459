"""The conformance kit: every built-in plugin passes it, and it catches each kind of breakage."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from support.conformance import broken_rules
from torch import nn

from advbench import Attack, Defense
from advbench.conformance import (
    ConformanceError,
    attack_checks,
    check_attack,
    check_defense,
    defense_checks,
)


def test_every_builtin_defense_passes(registry):
    entries = registry.resolve("defense", "all")
    assert entries
    failures = [message for entry in entries for message in
                broken_rules(defense_checks(entry.cls))]
    assert failures == []


def test_the_rules_are_the_documented_ones():
    attack_rules = [name for name, _ in attack_checks(Step)]
    assert attack_rules == ["attributes", "constructible", "config", "threat-model", "shapes",
                            "inputs-unchanged", "sealed", "isolated", "deterministic", "randomized",
                            "batch-size-invariant", "targeted", "targeted-progress"]
    defense_rules = [name for name, _ in defense_checks(Plain)]
    assert defense_rules == ["attributes", "constructible", "config", "fit", "wrap",
                             "randomized", "deterministic", "global-rng", "bpda-surrogate",
                             "training-loss", "served"]


def test_the_kit_leaves_the_global_state_alone():
    torch.manual_seed(123)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    check_attack(Step)
    check_defense(Plain)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_norms_limits_the_run_and_must_be_declared():
    check_attack(Step, norms=("linf",))
    with pytest.raises(ValueError, match="not declared"):
        check_attack(Step, norms=("l2",))


# A correct attack and defense, and broken variants of each --------------------------------------


@dataclass(kw_only=True)
class Step(Attack):
    """A correct, deterministic, targeted one-step L∞ attack (FGSM)."""

    name = "step"
    norms = ("linf",)
    targeted = True

    def run(self, oracle, x, y, threat, ctx):
        labels = y if ctx.targets is None else ctx.targets
        direction = 1.0 if ctx.targets is None else -1.0
        grad, _ = oracle.gradient(x, labels)
        return (x + direction * threat.eps * grad.sign()).clamp(0, 1)


class WrongNorm(Step):
    norms = ("linf", "L2")


class NeedsArguments(Step):
    def __init__(self, steps: int) -> None:
        self.steps = steps


@dataclass(kw_only=True)
class NoDefault(Step):
    steps: int


class PositionalConstructor(Step):
    def __init__(self, steps: int = 3) -> None:
        self.steps = steps


@dataclass(kw_only=True)
class UnserialisableConfig(Step):
    loss: Any = nn.functional.cross_entropy


class ModifiesInput(Step):
    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        x += threat.eps * grad.sign()
        return x.clamp_(0, 1)


class GlobalRandomness(Step):
    """Draws from the global RNG: not reproducible from ctx.generator."""

    def run(self, oracle, x, y, threat, ctx):
        return x + threat.eps * (2 * torch.rand(x.shape) - 1)


class UndeclaredRandomness(Step):
    """Draws from ctx.generator, as it should, but declares randomized=False."""

    def run(self, oracle, x, y, threat, ctx):
        noise = torch.rand(x.shape, generator=ctx.generator, device=x.device)
        return x + threat.eps * (2 * noise - 1)


class ExceedsEps(Step):
    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        return x + 2 * threat.eps * grad.sign()


class ScoresButGradient(Step):
    access = "scores"
    targeted = False


class BatchDependent(Step):
    """Scales every sample's step by the batch's largest gradient: samples interact."""

    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y)
        return x + threat.eps * grad / grad.abs().max().clamp_min(1e-12)


class OneChannelOnly(Step):
    def run(self, oracle, x, y, threat, ctx):
        grey = x.view(len(x), 1, x.shape[-2], x.shape[-1])  # assumes one channel
        return super().run(oracle, grey, y, threat, ctx)


class ClaimsTargeted(Step):
    def run(self, oracle, x, y, threat, ctx):
        if ctx.targets is not None:
            raise NotImplementedError("targets are not supported yet")
        return super().run(oracle, x, y, threat, ctx)


class ClimbsTargetLoss(Step):
    """Targeted, but with the sign of the untargeted step: it climbs the target's loss."""

    def run(self, oracle, x, y, threat, ctx):
        grad, _ = oracle.gradient(x, y if ctx.targets is None else ctx.targets)
        return (x + threat.eps * grad.sign()).clamp(0, 1)


@dataclass(kw_only=True)
class OverBudget(Step):
    max_queries: int = 1

    def run(self, oracle, x, y, threat, ctx):
        oracle.gradient(x, y)
        return super().run(oracle, x, y, threat, ctx)


class Plain(Defense):
    """A correct defense: standard training, no wrapper."""

    name = "plain"


class TrainModeAfterFit(Plain):
    def fit(self, model, train, ctx):
        return super().fit(model, train, ctx).train()


class ExtraClass(Plain):
    def wrap(self, model):
        return nn.Sequential(model, nn.Linear(3, 4))


class UnseededTraining(Plain):
    """Seeds its training noise from the operating system, not from ctx.seed."""

    generator: ClassVar[torch.Generator | None] = None

    def fit(self, model, train, ctx):
        self.generator = torch.Generator()
        self.generator.seed()
        return super().fit(model, train, ctx)

    def training_loss(self, model, x, y, progress):
        noise = torch.randn(x.shape, generator=self.generator)
        return nn.functional.cross_entropy(model(x + 0.5 * noise), y)


class GlobalNoiseTraining(Plain):
    """Trains on noise from the global RNG: the kit seeds it, so two fits still agree."""

    def training_loss(self, model, x, y, progress):
        return nn.functional.cross_entropy(model(x + 0.5 * torch.randn(x.shape)), y)


class BackwardInLoss(Plain):
    """Calls backward itself, keeping the graph, so the training loop's backward still works."""

    def training_loss(self, model, x, y, progress):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward(retain_graph=True)
        return loss


class BackwardFreesGraph(Plain):
    def training_loss(self, model, x, y, progress):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss


class NoisyForward(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.1 * torch.randn_like(x))


class UndeclaredRandomDefense(Plain):
    def wrap(self, model):
        return NoisyForward(model)


class GlobalNoiseWrapper(Plain):
    """Declares its randomness, but draws it from the global RNG (no reseed possible)."""

    randomized = True

    def wrap(self, model):
        return NoisyForward(model)


class ClockSeededNoise(nn.Module):
    """Noise from a generator of its own, seeded from the clock: no two processes agree."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.generator = torch.Generator().manual_seed(time.time_ns() + os.getpid())

    def forward(self, x):
        return self.model(x + 0.1 * torch.randn(x.shape, generator=self.generator))


class UnseededWrapper(Plain):
    randomized = True

    def wrap(self, model):
        return ClockSeededNoise(model)


class NaNLogits(Plain):
    def wrap(self, model):
        return nn.Sequential(model, nn.Threshold(1e9, float("nan")))


class Detached(nn.Module):
    """The model's logits with the graph cut: no input gradient for BPDA to follow."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).detach()


class SurrogateNotAModule(Plain):
    def bpda_surrogate(self, model):
        return lambda x: model(x)


class SurrogateWrongShape(Plain):
    def bpda_surrogate(self, model):
        return nn.Sequential(model, nn.Linear(3, 4))


class SurrogateWithoutGradient(Plain):
    def bpda_surrogate(self, model):
        return Detached(model)


@dataclass(kw_only=True)
class MisspelledWrapperField(Plain):
    votes: int = 10
    wrapper_fields = frozenset({"vote"})


class AbstainsBadly(Plain):
    class Wrapped(nn.Sequential):
        def predict(self, x):
            return torch.full((len(x),), -2)

    def wrap(self, model):
        return self.Wrapped(model)


def test_the_correct_samples_pass():
    check_attack(Step)
    check_defense(Plain)


@pytest.mark.parametrize("cls, rule, detail", [
    (WrongNorm, "attributes", "unknown norm"),
    (NeedsArguments, "constructible", "keyword-only"),
    (NoDefault, "constructible", "default"),
    (PositionalConstructor, "constructible", "keyword-only"),
    (UnserialisableConfig, "config", "JSON"),
    (ModifiesInput, "inputs-unchanged", "modified its input x"),
    (GlobalRandomness, "deterministic", "same seed differ"),
    (UndeclaredRandomness, "randomized", "randomized=False"),
    (ExceedsEps, "threat-model", "exceeds eps"),
    (ScoresButGradient, "access", "access='scores'"),
    (BatchDependent, "batch-size-invariant", "differ by"),
    (OneChannelOnly, "shapes", "RuntimeError"),
    (ClaimsTargeted, "targeted", "NotImplementedError"),
    (OverBudget, "query-budget", "max_queries"),
    (ClimbsTargetLoss, "targeted-progress", "moves away from ctx.targets"),
])
def test_the_kit_catches_a_broken_attack(cls, rule, detail):
    with pytest.raises(ConformanceError) as info:
        check_attack(cls)
    message = str(info.value)
    assert f"breaks rule '{rule}'" in message and detail in message
    assert "\n" not in message and cls.__qualname__ in message


@pytest.mark.parametrize("cls, rule, detail", [
    (MisspelledWrapperField, "attributes", "names no field: vote"),
    (TrainModeAfterFit, "fit", "train mode"),
    (ExtraClass, "wrap", "(8, 4)"),
    (NaNLogits, "wrap", "non-finite"),
    (AbstainsBadly, "wrap", "outside [-1"),
    (UnseededTraining, "deterministic", "two fits"),
    (UndeclaredRandomDefense, "randomized", "two forward passes"),
    (GlobalNoiseTraining, "global-rng", "fit drew from torch's global RNG"),
    (GlobalNoiseWrapper, "global-rng", "the forward pass drew"),
    (BackwardInLoss, "training-loss", "already hold the gradient"),
    (SurrogateNotAModule, "bpda-surrogate", "not an nn.Module"),
    (SurrogateWrongShape, "bpda-surrogate", "(8, 4)"),
    (SurrogateWithoutGradient, "bpda-surrogate", "not differentiable"),
    (UnseededWrapper, "served", "answers differently than in-process"),
])
def test_the_kit_catches_a_broken_defense(cls, rule, detail):
    with pytest.raises(ConformanceError) as info:
        check_defense(cls)
    message = str(info.value)
    assert f"breaks rule '{rule}'" in message and detail in message


def test_a_wrapping_defense_the_model_server_cannot_import_is_named_as_such():
    class Local(Plain):  # not at a module's top: no process can import it by name
        def wrap(self, model):
            return nn.Sequential(model, nn.Identity())

    with pytest.raises(ConformanceError, match="rule 'served'.*serving it failed.*building "
                                               "the defense raised"):
        check_defense(Local)


def test_a_backward_that_frees_the_graph_is_named_as_such():
    """fit fails too (the loop's backward finds no graph), but only this rule says why."""
    failures = broken_rules(defense_checks(BackwardFreesGraph))
    assert [message for message in failures if "rule 'training-loss'" in message
            and "remove its .backward()" in message]


def test_a_class_that_is_no_plugin_is_named():
    with pytest.raises(ConformanceError, match="not a subclass of advbench.Attack"):
        check_attack(Plain)


def test_each_rule_runs_on_its_own():
    """Parametrized use: a broken rule fails alone, the other rules still pass."""
    outcomes = {}
    for rule, check in attack_checks(BatchDependent):
        try:
            check()
            outcomes[rule] = "ok"
        except ConformanceError:
            outcomes[rule] = "broken"
    assert [rule for rule, outcome in outcomes.items() if outcome == "broken"] == [
        "batch-size-invariant"]
