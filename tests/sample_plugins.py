"""Sample plugins for the tests: attacks that cheat in every way the gate must catch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from advbench import Attack, Defense, hookimpl


class Cheater(Attack):
    norms = ("linf", "l2")
    access = "gradient"


@dataclass(kw_only=True)
class TooFar(Cheater):
    name = "too-far"

    def run(self, oracle, x, y, threat, ctx):
        return x + 2 * threat.eps * (0.5 - x).sign()


@dataclass(kw_only=True)
class ReturnsNaN(Cheater):
    name = "returns-nan"

    def run(self, oracle, x, y, threat, ctx):
        out = x.clone()
        out[0, 0, 0, 0] = float("nan")
        return out


@dataclass(kw_only=True)
class WrongShape(Cheater):
    name = "wrong-shape"

    def run(self, oracle, x, y, threat, ctx):
        return x[:, :, :-1]


@dataclass(kw_only=True)
class WrongDtype(Cheater):
    name = "wrong-dtype"

    def run(self, oracle, x, y, threat, ctx):
        return x.double()


@dataclass(kw_only=True)
class WrongDevice(Cheater):
    name = "wrong-device"

    def run(self, oracle, x, y, threat, ctx):
        return torch.empty_like(x, device="meta")


@dataclass(kw_only=True)
class NotATensor(Cheater):
    name = "not-a-tensor"

    def run(self, oracle, x, y, threat, ctx):
        return x.numpy()


@dataclass(kw_only=True)
class OutOfBox(Cheater):
    """Pushes dark pixels below 0 while staying inside the ball: valid once the gate clips."""

    name = "out-of-box"

    def run(self, oracle, x, y, threat, ctx):
        return x - threat.eps


@dataclass(kw_only=True)
class ModifiesInput(Cheater):
    """Writes into the tensor it was given: the harness hands it a copy, so nothing leaks."""

    name = "modifies-input"

    def run(self, oracle, x, y, threat, ctx):
        x.zero_()
        return x


@dataclass(kw_only=True)
class Raises(Cheater):
    name = "raises"

    def run(self, oracle, x, y, threat, ctx):
        raise RuntimeError("boom")


@dataclass(kw_only=True)
class RandomSign(Attack):
    """An honest, weak L∞ attack: a random corner of the ball (for worst-case tests)."""

    name = "random-sign"
    norms = ("linf",)
    randomized = True

    def run(self, oracle, x, y, threat, ctx):
        signs = torch.randint(0, 2, x.shape, generator=ctx.generator, device=x.device) * 2 - 1
        return x + threat.eps * signs.to(x.dtype)


INTERRUPT = {"armed": False}


@dataclass(kw_only=True)
class Interrupter(Attack):
    """A no-op attack that simulates Ctrl-C when armed (for the resume tests)."""

    name = "interrupter"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        if INTERRUPT["armed"]:
            raise KeyboardInterrupt
        return x


@dataclass(kw_only=True)
class WeakAtLargeEps(Attack):
    """FGSM below ε = 0.05, nothing above: robust accuracy rises with ε."""

    name = "weak-at-large-eps"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        if threat.eps > 0.05:
            return x
        grad, _ = oracle.gradient(x, y)
        return x + threat.eps * grad.sign()


@dataclass(kw_only=True)
class FakeIterative(Attack):
    """Claims to iterate, does nothing: FGSM beats it."""

    name = "fake-iterative"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        return x


@dataclass(kw_only=True)
class ScoreRandomSign(RandomSign):
    """Random corners seen through scores only: a (weak) black-box attack."""

    name = "score-random-sign"
    access = "scores"

    def run(self, oracle, x, y, threat, ctx):
        best = x
        for _ in range(5):
            candidate = super().run(oracle, x, y, threat, ctx).clamp(0, 1)
            fooled = oracle.scores(candidate).argmax(dim=1) != y
            best = torch.where(fooled.view(-1, 1, 1, 1), candidate, best)
        return best


def round_input(module, args):
    """A forward pre-hook rounding inputs to 4 levels: every input gradient is zero."""
    return (torch.round(args[0] * 3) / 3,)


class NoisyLogits(torch.nn.Module):
    """Adds noise to the logits: a randomized model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        return logits + 3 * torch.randn_like(logits)


@dataclass(kw_only=True)
class QuantizedDefense(Defense):
    """Quantization hooked into the trained model itself, not a wrapper around it: the harness
    has no unwrapped model to take BPDA gradients from, so only the sanity battery can tell."""

    name = "quantized"

    def wrap(self, model):
        model.register_forward_pre_hook(round_input)
        return model


@dataclass(kw_only=True)
class NoisyDefense(Defense):
    name = "noisy-logits"

    def wrap(self, model):
        return NoisyLogits(model)


@dataclass(kw_only=True)
class NeedsSmallBatches(Attack):
    """Runs out of memory on batches over 10 samples; FGSM otherwise."""

    name = "needs-small-batches"
    norms = ("linf",)

    def run(self, oracle, x, y, threat, ctx):
        if len(x) > 10:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        grad, _ = oracle.gradient(x, y)
        return x + threat.eps * grad.sign()


CHEATERS = [TooFar, ReturnsNaN, WrongShape, WrongDtype, WrongDevice, NotATensor]


@dataclass(kw_only=True)
class FailingDefense(Defense):
    name = "fails-training"

    def training_loss(self, model, x, y, progress):
        raise RuntimeError("training diverged")


@dataclass(kw_only=True)
class DiesOnce(Attack):
    """FGSM-like, but the first process to run it dies mid-cell (os._exit), as a worker killed
    by the OOM killer or a lost node would: the executor must run the cell again, once."""

    name = "dies-once"
    norms = ("linf",)
    access = "gradient"

    def run(self, oracle, x, y, threat, ctx):
        marker = Path(os.environ["BENCH_TEST_DIE_MARKER"])
        if not marker.exists():
            marker.write_text("died")
            os._exit(1)
        grad, _ = oracle.gradient(x, y)
        return x + threat.eps * grad.sign()


@hookimpl
def bench_attacks():
    return [*CHEATERS, OutOfBox, ModifiesInput, Raises, RandomSign, Interrupter,
            WeakAtLargeEps, FakeIterative, ScoreRandomSign, NeedsSmallBatches, DiesOnce]


@hookimpl
def bench_defenses():
    return [FailingDefense, QuantizedDefense, NoisyDefense]
