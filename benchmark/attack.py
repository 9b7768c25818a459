"""The attack base class: plugins write ``run``; the harness owns ``perturb``.

Attacks are small configuration objects (write them as ``@dataclass(kw_only=True)`` with a
default for every field, so ``--attacks all`` can build each one). Capabilities are class
attributes the runner reads to plan the matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, final

import torch

from advbench.gate import GateResult, check_adversarial
from advbench.oracle import Oracle
from advbench.threat import ThreatModel


@dataclass(frozen=True)
class Criterion:
    """What counts as adversarial for a batch (Foolbox's criteria), so that attacks write the
    untargeted/targeted branch once: build it with :func:`criterion_for` or
    ``AttackContext.criterion(y)``; index it like a tensor to follow a subset of rows.

    ``labels``: the class each row's loss is taken against (true labels, or targets).
    ``sign``: +1 to ascend that loss (leave the class), −1 to descend it (reach the class).
    """

    labels: torch.Tensor
    sign: ClassVar[float]
    targeted: ClassVar[bool]

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        """Per row of ``logits``: is that prediction adversarial?"""
        raise NotImplementedError

    def __getitem__(self, rows: torch.Tensor) -> Self:
        return dataclasses.replace(self, labels=self.labels[rows])

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Misclassification(Criterion):
    """Untargeted: any class but the true label ``labels``."""

    sign = 1.0
    targeted = False

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1) != self.labels


@dataclass(frozen=True)
class TargetedMisclassification(Criterion):
    """Targeted: exactly the target class ``labels``."""

    sign = -1.0
    targeted = True

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1) == self.labels


def criterion_for(y: torch.Tensor, targets: torch.Tensor | None) -> Criterion:
    """Misclassification of ``y``, or with ``targets`` reaching them."""
    return Misclassification(y) if targets is None else TargetedMisclassification(targets)


@dataclass
class AttackContext:
    """What an attack gets besides the batch: a seeded generator, the targets if targeted, and
    ``record``, where it may report per-sample values for its row. The one the harness reads
    today: ``record["norm_before_projection"]`` (one value per sample: the perturbation size a
    minimum-norm attack needed before projecting onto the ε-ball, inf where it found none),
    whose median becomes the row's ``median_norm``. It is the attack's own report: the harness
    checks its shape, not its truth."""

    generator: torch.Generator
    targets: torch.Tensor | None = None
    record: dict[str, torch.Tensor] = field(default_factory=dict)

    def criterion(self, y: torch.Tensor) -> Criterion:
        """The batch's criterion: misclassify ``y``, or reach ``targets`` when given."""
        return criterion_for(y, self.targets)


class Attack:
    """Base class of every attack.

    Class attributes:
        name: the name users type (``--attacks NAME``).
        norms: the threat models it supports, among ``linf``, ``l2``, ``l1``, ``l0``.
        access: ``gradient``, ``scores`` or ``decision`` — what the oracle will allow it.
        targeted: whether it accepts targets in ``AttackContext.targets``.
        randomized: whether its output depends on ``AttackContext.generator``.
        single_step: one gradient step (FGSM-like): the sanity battery expects iterative
            attacks of the same norm to do at least as well.
        presets: constructor arguments per preset name (``{"cpu": {"iterations": 20}}``),
            where the attack costs too much at its defaults for that preset's hardware; they are
            recorded in each row's config and ``--set`` overrides them.
        max_queries: the per-sample query budget the oracle enforces (None: unlimited); a
            field or property where it depends on the settings. Rows report it.
        against_randomized: whether a cascade runs it against a randomized defense. There, as
            in AutoAttack's version for randomized defenses (Croce & Hein 2020), the cascade
            keeps the untargeted gradient attacks with EOT: an attack that costs many times
            theirs per sample against a noisy model and adds little there (APGD-T's nine
            targets, FAB's Jacobians) declares False and is left out of the chain, unless
            nothing else of the chain would run. ``--no-cascade`` runs it anyway.
        minimum_norm: a minimum-norm attack (FMN, FAB): per sample it looks for the smallest
            perturbation that breaks it and reports that size in
            ``ctx.record["norm_before_projection"]``. Against a defense not declaring itself
            randomized, a cascade runs it outside the chain, after the chained attacks: on
            every correctly classified sample (no skip), so every sample gets its radius for
            the robustness curve; what it breaks feeds no skip to a chained attack, and still
            counts in the worst case. Against a randomized one it is chained like any other.
    """

    name: ClassVar[str]
    norms: ClassVar[tuple[str, ...]]
    access: ClassVar[str] = "gradient"
    targeted: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    single_step: ClassVar[bool] = False
    against_randomized: ClassVar[bool] = True
    minimum_norm: ClassVar[bool] = False
    description: ClassVar[str] = ""
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    if TYPE_CHECKING:  # read-only here, so that a subclass may make it a field or a property
        @property
        def max_queries(self) -> int | None:
            return None
    else:
        max_queries: int | None = None

    def run(
        self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
        ctx: AttackContext,
    ) -> torch.Tensor:
        """Return adversarial examples for ``x`` (true labels ``y``) inside ``threat``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings that determine this attack's output (its dataclass fields)."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def figures(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                stem: Path) -> list[Path]:
        """PNG figures of the attack's own, written at ``stem`` + a suffix, of the samples a
        cell keeps for its pictures. The worker calls it after a valid cell, with an oracle at
        the attack's access level on the defended model under the run's seal (its queries are
        not the cell's); the files go into the run's ``figures/``. None by default."""
        return []

    @final
    def perturb(
        self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
        ctx: AttackContext,
    ) -> GateResult:
        """Run the attack on copies of the inputs and pass its output through the gate."""
        if threat.norm not in self.norms:
            raise ValueError(f"{self.name} does not support the {threat.norm} threat model")
        if ctx.targets is not None and not self.targeted:
            raise ValueError(f"{self.name} is not a targeted attack")
        x_adv = self.run(oracle, x.clone(), y.clone(), threat, ctx)
        return check_adversarial(x, x_adv, threat)
