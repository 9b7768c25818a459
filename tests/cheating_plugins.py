"""Plugins that cheat past the gate: they change the model or what they are graded with, run the
model behind the oracle's back or tamper with its counts (issue #15). The seal must catch each."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
from torch import nn

from advbench import Attack, Defense, Split, hookimpl

N_EVAL = 40  # the tests' evaluation size: gc cheaters edit the splits of exactly that size


def fgsm_step(oracle, x, y, threat):
    """An honest FGSM step, so that a cheater's output also passes the gate."""
    grad, _ = oracle.gradient(x, y)
    return x + threat.eps * grad.sign()


def evaluation_splits() -> list[Split]:
    """Every live Split of the run's evaluation size, as a plugin finds them through ``gc``."""
    return [o for o in gc.get_objects() if type(o) is Split and len(o) == N_EVAL]


class Cheat(Attack):
    norms = ("linf",)
    access = "gradient"


@dataclass(kw_only=True)
class ZeroesWeights(Cheat):
    """(1) Zeroes every weight through the oracle's private handle, then attacks honestly."""

    name = "zeroes-weights"

    def run(self, oracle, x, y, threat, ctx):
        with torch.no_grad():
            for parameter in oracle._model.parameters():
                parameter.zero_()
        return fgsm_step(oracle, x, y, threat)


@dataclass(kw_only=True)
class ScoresButGradients(Cheat):
    """(2) Declares scores, then runs PGD through the private model handle."""

    name = "scores-but-gradients"
    access = "scores"

    def run(self, oracle, x, y, threat, ctx):
        x_adv = x.clone()
        for _ in range(5):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(oracle._model(x_adv), y)
                grad, = torch.autograd.grad(loss, x_adv)
            x_adv = (x_adv.detach() + threat.eps / 4 * grad.sign()).clamp(x - threat.eps,
                                                                          x + threat.eps)
        return x_adv


@dataclass(kw_only=True)
class RaisesItsAccess(Cheat):
    """(2b) Declares scores, flips the oracle's access to gradient and asks it for gradients."""

    name = "raises-its-access"
    access = "scores"

    def run(self, oracle, x, y, threat, ctx):
        oracle.access = "gradient"
        x_adv = fgsm_step(oracle, x, y, threat)
        oracle.access = "scores"
        return x_adv


@dataclass(kw_only=True)
class ForwardsOutside(Cheat):
    """(3) A decision attack that reads its labels off a submodule chain, not the oracle."""

    name = "forwards-outside"
    access = "decision"

    def run(self, oracle, x, y, threat, ctx):
        with torch.no_grad():
            signs = torch.randint(0, 2, x.shape, generator=ctx.generator) * 2 - 1
            candidate = (x + threat.eps * signs).clamp(0, 1)
            fooled = oracle._model(candidate).argmax(dim=1) != y
        return torch.where(fooled.view(-1, 1, 1, 1), candidate, x)


@dataclass(kw_only=True)
class ResetsQueries(Cheat):
    """(4) Spends queries, then resets the oracle's count to look cheap."""

    name = "resets-queries"
    access = "scores"

    def run(self, oracle, x, y, threat, ctx):
        for _ in range(3):
            oracle.scores(x)
        oracle.queries.zero_()
        return x


@dataclass(kw_only=True)
class RaisesItsBudget(Cheat):
    """(4b) Lifts the oracle's query budget, spends past it, and puts the budget back."""

    name = "raises-its-budget"
    access = "scores"
    max_queries: int = 2

    def run(self, oracle, x, y, threat, ctx):
        oracle.max_queries = None
        for _ in range(4):
            oracle.scores(x)
        oracle.max_queries = self.max_queries
        return x


@dataclass(kw_only=True)
class TrainModeForward(Cheat):
    """(5) Puts the model in train mode for its queries: BatchNorm updates its running
    statistics (and the mode is put back, as if nothing happened)."""

    name = "train-mode-forward"

    def run(self, oracle, x, y, threat, ctx):
        oracle._model.train()
        x_adv = fgsm_step(oracle, x, y, threat)
        oracle._model.eval()
        return x_adv


@dataclass(kw_only=True)
class EditsGradedData(Cheat):
    """(6) Finds the evaluation splits through ``gc`` and edits their labels (``what="labels"``)
    or images (``what="images"``) so that the attacked samples count as fooled."""

    name = "edits-graded-data"
    what: str = "labels"

    def run(self, oracle, x, y, threat, ctx):
        for split in evaluation_splits():
            if self.what == "labels":
                split.y.add_(1).remainder_(10)
            else:
                split.x.mul_(0.5)
        return x


@dataclass(kw_only=True)
class EditsGradedImages(EditsGradedData):
    name = "edits-graded-images"
    what: str = "images"


@dataclass(kw_only=True)
class MovesTheReference(Cheat):
    """Finds, through ``gc``, the harness's copy of the batch (the gate's reference) and moves
    it by ε, so that a perturbation of 2ε passes the gate."""

    name = "moves-the-reference"

    def run(self, oracle, x, y, threat, ctx):
        for o in gc.get_objects():
            if (type(o) is torch.Tensor and o is not x and o.shape == x.shape
                    and torch.equal(o, x)):
                o.add_(threat.eps)
        return x + 2 * threat.eps


@dataclass(kw_only=True)
class CheatsThenRaises(ZeroesWeights):
    """Zeroes the weights and raises: the cell says it cheated, not merely that it failed."""

    name = "cheats-then-raises"

    def run(self, oracle, x, y, threat, ctx):
        super().run(oracle, x, y, threat, ctx)
        raise RuntimeError("nothing to see here")


@dataclass(kw_only=True)
class ClearsHooks(Cheat):
    """(8) Clears the model's forward hooks, then runs the model behind the oracle."""

    name = "clears-hooks"
    access = "decision"

    def run(self, oracle, x, y, threat, ctx):
        for module in oracle._model.modules():
            module._forward_pre_hooks.clear()
        with torch.no_grad():
            oracle._model(x)
        return x


@dataclass(kw_only=True)
class EditsEvaluationData(Defense):
    """(7) A defense whose ``fit`` zeroes the evaluation images it finds through ``gc``."""

    name = "edits-evaluation-data"

    def fit(self, model, train, ctx):
        for split in evaluation_splits():
            if split is not train:
                split.x.zero_()
        return model


def bn_cnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A small CNN with BatchNorm (``--model cheating_plugins:bn_cnn``)."""
    channels = in_shape[0]
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * (in_shape[1] // 2) * (in_shape[2] // 2), num_classes))


CHEATS = [ZeroesWeights, ScoresButGradients, RaisesItsAccess, ForwardsOutside, ResetsQueries,
          RaisesItsBudget, TrainModeForward, EditsGradedData, EditsGradedImages,
          MovesTheReference, CheatsThenRaises, ClearsHooks]


@hookimpl
def bench_attacks():
    return CHEATS


@hookimpl
def bench_defenses():
    return [EditsEvaluationData]
