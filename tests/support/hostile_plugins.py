"""Third-party attacks of tests/e2e/test_isolation.py (#29): each cheat of the issue and more, and
honest attacks written with each of the oracle's interfaces. They live at a module's top level so
that the attack process can import them by pickle reference; ``bench_attacks`` lets the module be
loaded through ``BENCH_PLUGINS`` too (``PYTHONPATH`` at tests/support, name ``hostile_plugins``).

Every cheat here, run in-process, would reach the harness; run isolated it must reach nothing:
the cheats that look for the model (``gc``, ``oracle._model``) find none and say so by what they
return (``x`` unchanged), the ones that break their process cost their cell only.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import sys
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import advbench.attack
import advbench.gate
from advbench import Attack, GateResult, hookimpl
from advbench.running.wire import send
from advbench_plugins.fgsm import FGSM


def third_party(*classes: type[Attack]) -> types.SimpleNamespace:
    """A plugin object as a third party's module would be: one ``bench_attacks`` hook (its
    distribution is "local": isolated under ``--isolation auto``)."""
    return types.SimpleNamespace(bench_attacks=hookimpl(lambda: list(classes)))


class Hostile(Attack):
    norms = ("linf",)


def modules_in_reach() -> list[nn.Module]:
    """Every ``nn.Module`` the garbage collector knows of in this process."""
    return [obj for obj in gc.get_objects() if isinstance(obj, nn.Module)]


# --- cheats -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class PatchesTheGate(Hostile):
    """At run time, makes every gate it can reach accept anything, then returns blank images."""

    name = "h-patch-gate"

    def run(self, oracle, x, y, threat, ctx):
        def accept(x, x_adv, threat):
            return GateResult(x_adv)

        advbench.attack.check_adversarial = accept  # type: ignore[assignment]
        advbench.gate.check_adversarial = accept  # type: ignore[assignment]
        return torch.zeros_like(x)


class ShiftedArgmax(torch.Tensor):
    """Answers argmax one class off: the harness's prediction would never match the label."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func in (torch.argmax, torch.Tensor.argmax):
            return (out + 1) % 10
        return out


@dataclass(kw_only=True)
class SubclassReturn(Hostile):
    """Returns x barely moved, as a tensor subclass whose argmax is one class off."""

    name = "h-subclass"

    def run(self, oracle, x, y, threat, ctx):
        return (x + 0.001 * (0.5 - x).sign()).as_subclass(ShiftedArgmax)


@dataclass(kw_only=True)
class DeepcopiesTheModel(Hostile):
    """A score-access attack (budget 5) that copies the oracle's model to run PGD on the copy."""

    name = "h-deepcopy"
    access = "scores"
    max_queries: int | None = 5

    def run(self, oracle, x, y, threat, ctx):
        model = copy.deepcopy(oracle._model)
        return pgd_on(model, x, y, threat.eps)


@dataclass(kw_only=True)
class WalksTheHeap(Hostile):
    """A score-access attack (budget 5) that looks for any model through ``gc`` and runs PGD
    on the first that classifies the batch; finding none, it returns ``x`` unchanged."""

    name = "h-gc-walk"
    access = "scores"
    max_queries: int | None = 5

    def run(self, oracle, x, y, threat, ctx):
        oracle.scores(x)  # one honest query
        for module in modules_in_reach():
            try:
                with torch.no_grad():
                    shape = module(x[:1]).shape
            except Exception:
                continue
            if shape == (1, 10):
                return pgd_on(module, x, y, threat.eps)
        return x


def pgd_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """PGD-10 L∞ on a model of the attack's own (the cheat: no oracle, no queries)."""
    x_adv = x.clone()
    for _ in range(10):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
            grad = torch.autograd.grad(loss, x_adv)[0]
        x_adv = (x + (x_adv.detach() + eps / 4 * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv


def zero_every_model(rounds: int, pause: float) -> None:
    for _ in range(rounds):
        for module in modules_in_reach():
            with torch.no_grad():
                for parameter in module.parameters():
                    parameter.zero_()
        time.sleep(pause)


@dataclass(kw_only=True)
class LeavesAThread(Hostile):
    """Returns ``x`` and leaves a thread zeroing every model it can find, for a few seconds."""

    name = "h-thread"

    def run(self, oracle, x, y, threat, ctx):
        for pause in (0.0, 0.01, 0.03):
            threading.Thread(target=zero_every_model, args=(100, pause), daemon=True).start()
        return x


@dataclass(kw_only=True)
class CallsSysExit(Hostile):
    name = "h-sys-exit"

    def run(self, oracle, x, y, threat, ctx):
        sys.exit(0)


@dataclass(kw_only=True)
class CallsOsExit(Hostile):
    name = "h-os-exit"

    def run(self, oracle, x, y, threat, ctx):
        os._exit(3)


@dataclass(kw_only=True)
class Segfaults(Hostile):
    name = "h-segfault"

    def run(self, oracle, x, y, threat, ctx):
        ctypes.string_at(0)
        return x


@dataclass(kw_only=True)
class Hangs(Hostile):
    name = "h-hang"

    def run(self, oracle, x, y, threat, ctx):
        time.sleep(3600)
        return x


@dataclass(kw_only=True)
class AllocatesTooMuch(Hostile):
    """Asks for 8 GiB at once (the run's attack process has 4 GiB of address space)."""

    name = "h-memory"

    def run(self, oracle, x, y, threat, ctx):
        hoard = torch.empty(8 * 2**30 // 4)
        return x + 0 * hoard[0]


def connection_fd() -> int:
    """The attack process's end of its connection to the harness (its command line says it)."""
    return int(sys.argv[1])


@dataclass(kw_only=True)
class SendsAnOverlongMessage(Hostile):
    """Writes a message length far above the header limit straight on the connection, then
    waits for an answer that cannot come."""

    name = "h-overlong"

    def run(self, oracle, x, y, threat, ctx):
        os.write(connection_fd(), (1 << 30).to_bytes(4, "big"))
        time.sleep(3600)
        return x


@dataclass(kw_only=True)
class SendsHalfAMessage(Hostile):
    """Announces a 100-byte header, writes 10 bytes of it and waits."""

    name = "h-half-message"

    def run(self, oracle, x, y, threat, ctx):
        os.write(connection_fd(), (100).to_bytes(4, "big") + b"{\"op\": \"d")
        time.sleep(3600)
        return x


@dataclass(kw_only=True)
class StopsReading(Hostile):
    """Sends request after request on the oracle's own connection and reads no answer: the
    harness's answers fill the socket, and its next send would wait for ever."""

    name = "h-no-read"

    def run(self, oracle, x, y, threat, ctx):
        rows, index = x.repeat(16, 1, 1, 1), torch.arange(len(x)).repeat(16)
        for _ in range(1000):
            send(oracle._conn, {"op": "scores", "index": True}, [rows, index])
        time.sleep(3600)
        return x


CHEATS: tuple[type[Attack], ...] = (
    PatchesTheGate, SubclassReturn, DeepcopiesTheModel, WalksTheHeap, LeavesAThread,
    CallsSysExit, CallsOsExit, Segfaults, Hangs, AllocatesTooMuch)
PROTOCOL_BREAKERS: tuple[type[Attack], ...] = (
    SendsAnOverlongMessage, SendsHalfAMessage, StopsReading)


# --- honest third-party attacks, one per way of using the oracle --------------------------


@dataclass(kw_only=True)
class ThirdPartyFGSM(FGSM):
    """bench's FGSM under a third party's name: ``oracle.gradient`` with a public loss."""

    name = "fgsm-3p"


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A loss of the attack's own: the best other class's logit minus the true one, summed."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), -1e9)
    return (other.max(dim=1).values - true).sum()


@dataclass(kw_only=True)
class SmallPGD(Attack):
    """PGD L∞ with ``steps`` steps of ε/4; subclasses say how they get the gradient."""

    norms = ("linf",)
    steps: int = 5

    def gradient(self, oracle: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run(self, oracle, x, y, threat, ctx):
        x_adv = x.clone()
        for _ in range(self.steps):
            grad = self.gradient(oracle, x_adv, y)
            step = x_adv + threat.eps / 4 * grad.sign()
            x_adv = (x + (step - x).clamp(-threat.eps, threat.eps)).clamp(0, 1).detach()
        return x_adv


@dataclass(kw_only=True)
class LambdaLossPGD(SmallPGD):
    """``oracle.gradient`` with a loss of its own, a lambda."""

    name = "pgd-lambda-3p"

    def gradient(self, oracle, x, y):
        grad, _ = oracle.gradient(
            x, y, loss=lambda logits, y: nn.functional.cross_entropy(logits, y, reduction="sum"))
        return grad


@dataclass(kw_only=True)
class LogitsBackwardPGD(SmallPGD):
    """``oracle.logits``, its own margin loss, ``.backward()``."""

    name = "pgd-backward-3p"

    def gradient(self, oracle, x, y):
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            margin(oracle.logits(x), y).backward()
        assert x.grad is not None
        return x.grad


@dataclass(kw_only=True)
class LogitsAutogradPGD(SmallPGD):
    """``oracle.logits`` of a subset at a time (``index``), ``torch.autograd.grad``."""

    name = "pgd-autograd-3p"

    def gradient(self, oracle, x, y):
        grad = torch.zeros_like(x)
        for part in torch.arange(len(x)).chunk(2):
            xs = x[part].clone().requires_grad_(True)
            with torch.enable_grad():
                loss = margin(oracle.logits(xs, index=part), y[part])
                grad[part] = torch.autograd.grad(loss, xs)[0]
        return grad


@dataclass(kw_only=True)
class FuncGradPGD(SmallPGD):
    """``torch.func.grad`` of its own loss over ``oracle.logits``."""

    name = "pgd-func-3p"

    def gradient(self, oracle, x, y):
        return torch.func.grad(lambda z: margin(oracle.logits(z), y))(x)


HONEST: tuple[type[Attack], ...] = (
    ThirdPartyFGSM, LambdaLossPGD, LogitsBackwardPGD, LogitsAutogradPGD, FuncGradPGD)


@hookimpl
def bench_attacks() -> list[type[Attack]]:
    return [*CHEATS, *HONEST]
