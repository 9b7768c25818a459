"""What an adapter needs to bring a whole attack library (torchattacks, ART) into bench honestly.

Built-in plugins may import only bench's public API, never one another, so the pieces every
adapter shares live here rather than in one adapter: the oracle dressed as an ``nn.Module``
(:class:`OracleModel`, each row of each call charged to its own sample, :func:`nearest`), the
global RNGs seeded from the cell's generator and restored (:func:`seeded_global_rng`,
:func:`draw_seed`), and the projection of a minimum-norm attack's output onto the threat model's
ball with the size it needed before (:func:`project_minimum_norm`; :func:`project_l0` is
:mod:`advbench.threat`'s, named here too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from advbench.attack import Attack
from advbench.oracle import Oracle
from advbench.threat import ThreatModel, clip_to_box, perturbation_size, project
from advbench.threat import project_l0 as project_l0  # part of this module's public API


@dataclass(frozen=True)
class AdaptedSpec:
    """One attack of an attack library, as an adapter declares it: its bench ``name``, the
    ``upstream`` class name, its ``norms``, a one-line ``summary``, its access, targeted and
    randomized support; ``per_sample``: called one image at a time; ``minimum_norm``: its output
    may leave the ε-ball, so it is projected; ``choices``: allowed values of string arguments;
    ``budget``: the per-sample query budget from the attack's arguments. Adapters subclass it
    for what only their library needs."""

    name: str
    upstream: str
    norms: tuple[str, ...]
    summary: str
    access: str = "gradient"
    targeted: bool = False
    randomized: bool = False
    per_sample: bool = False
    minimum_norm: bool = False
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    budget: Callable[[Any], int] | None = None


class AdaptedAttack(Attack):
    """Base of an adapter's attacks; each subclass is built from one spec and the upstream
    class it names."""

    spec: ClassVar[AdaptedSpec]
    upstream_class: ClassVar[type]

    @property
    def max_queries(self) -> int | None:
        return None if self.spec.budget is None else self.spec.budget(self)

    def upstream_arguments(self, harness: dict[str, Any]) -> dict[str, Any]:
        """The upstream constructor's arguments: the user's (the plugin's fields), then those
        of ``harness`` the constructor accepts (ε, norm, seed, verbosity: the harness's)."""
        accepted = inspect.signature(self.upstream_class).parameters
        # Every subclass is made by adapted_attack's make_dataclass.
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        given = {f.name: getattr(self, f.name) for f in fields if f.init}
        return {**given, **{k: v for k, v in harness.items() if k in accepted}}


A = TypeVar("A", bound=AdaptedAttack)


def adapted_class(spec: AdaptedSpec, base: type[A], upstream: type,
                  fields: list[tuple[str, Any, Any]], *, title: str, package: str, version: str,
                  prefix: str, module: str, **namespace: Any) -> type[A]:
    """The bench attack class of one library attack: a dataclass of upstream's arguments
    (``fields``) plus the recorded ``projected`` and ``upstream`` (``<package>.<class>
    <version>``), named ``prefix`` + upstream's class name and put in ``module`` under that
    name, since processes and Ray pickle attacks by name."""
    fields = [*fields,
              ("projected", bool, dataclasses.field(default=spec.minimum_norm, init=False)),
              ("upstream", str, dataclasses.field(
                  default=f"{package}.{spec.upstream} {version}", init=False))]
    note = "; output projected onto the ε-ball" if spec.minimum_norm else ""
    namespace = {"name": spec.name, "norms": spec.norms, "access": spec.access,
                 "targeted": spec.targeted, "randomized": spec.randomized, "spec": spec,
                 "upstream_class": upstream,
                 "description": f"{title} {spec.upstream}: {spec.summary}{note}", **namespace}
    class_name = prefix + spec.upstream
    cls: type[A] = dataclasses.make_dataclass(class_name, fields, bases=(base,),
                                              namespace=namespace, kw_only=True)
    cls.__module__ = module
    setattr(sys.modules[module], class_name, cls)
    return cls


class OracleModel(nn.Module):
    """The defended model as a library sees it: no weights, every forward an oracle query.

    ``access`` is the attack's declared one: ``gradient`` asks for ``oracle.logits`` (refused by
    a lesser oracle), ``scores`` for the log of ``oracle.scores`` (no gradient; their softmax
    gives the probabilities back and their differences are the logit margins), ``decision`` for
    ``oracle.labels`` (a long tensor, −1 where the model abstains). ``owner`` set: every row is
    charged to that sample. Otherwise a call on the whole batch is charged row by row and any
    other call row by row to the nearest clean image of ``clean``.
    """

    def __init__(self, oracle: Oracle, clean: torch.Tensor, norm: str, access: str) -> None:
        super().__init__()
        # Libraries read the device from the parameters; this one holds nothing.
        self.anchor = nn.Parameter(torch.empty(0, device=clean.device), requires_grad=False)
        self.oracle, self.clean, self.norm = oracle, clean.detach().flatten(1), norm
        self.access = access
        self.owner: int | None = None
        self.rows = 0

    def charge_index(self, x: torch.Tensor) -> torch.Tensor:
        """The sample each row of ``x`` is charged to."""
        n, device = x.shape[0], self.oracle.queries.device
        if self.owner is not None:
            return torch.full((n,), self.owner, dtype=torch.long, device=device)
        if n == self.clean.shape[0]:
            return torch.arange(n, device=device)
        return nearest(x.detach().flatten(1).to(self.clean.dtype), self.clean, self.norm).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = self.charge_index(x)
        self.rows += x.shape[0]
        x = x.to(self.clean.device)
        if self.access == "gradient":
            return self.oracle.logits(x, index)
        if self.access == "decision":
            return self.oracle.labels(x, index)
        scores = self.oracle.scores(x, index)
        return scores.clamp_min(torch.finfo(scores.dtype).tiny).log()


def nearest(rows: torch.Tensor, clean: torch.Tensor, norm: str) -> torch.Tensor:
    """Index of the clean image nearest to each row, in chunks that keep memory small."""
    p = {"linf": math.inf, "l1": 1.0}.get(norm, 2.0)  # L0 images: the nearest in L2
    chunk = max(1, 2**24 // max(1, clean.numel()))
    return torch.cat([torch.cdist(rows[i:i + chunk], clean, p=p).argmin(dim=1)
                      for i in range(0, rows.shape[0], chunk)])


def project_minimum_norm(x: torch.Tensor, raw: torch.Tensor,
                         threat: ThreatModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``raw`` clipped to the box and projected onto the ε-ball around ``x`` (L∞ clamp, L2
    rescale, L0 keeping the ε most-changed pixels), and each perturbation's size before the
    projection, on the CPU (``inf`` where the attack gave the image back unchanged): what a
    minimum-norm attack reports as ``ctx.record["norm_before_projection"]``."""
    delta = clip_to_box(raw) - x
    size = perturbation_size(delta, threat.norm)
    norms = torch.where(size > 0, size, torch.inf).cpu()
    return clip_to_box(x + project(delta, threat)), norms


def draw_seed(generator: torch.Generator) -> int:
    """One seed for a library's global RNGs, drawn from the cell's generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The global torch (CPU and ``device``), numpy and Python RNGs seeded, then restored:
    libraries draw from them (ART's Square from Python's ``random``), the harness wants a run
    reproducible from its seed and nothing else moved."""
    devices = [device] if device.type == "cuda" else []
    state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)
            random.setstate(python_state)
