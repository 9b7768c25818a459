"""Adversarial training (Madry et al. 2018; Wong, Rice & Kolter 2020): the epoch loop, the
catastrophic-overfitting guard and the training curves that ``adv-train-*`` defenses share.
A public building block: subclass :class:`AdversarialTraining` for any defense that trains on
adversarial examples, built in or third party, and it gets the curves and the guard.

Each batch is trained on adversarial examples made on the fly against the current weights (by
Danskin's theorem the gradient of the inner maximum is the loss gradient at the maximiser), with
an optional clean share of the batch.

A subclass implements :meth:`AdversarialTraining.adversarial_examples` (inside
:attr:`AdversarialTraining.threat`, drawing from the generator it is given), and may override
``training_loss`` for another objective than cross-entropy on them (TRADES: clean
cross-entropy plus β·KL to the adversarial logits), calling ``self.adversarial_examples(model,
x, y, self.context.generator)``. It gets: the ε of the run (``eps`` None means the run's largest
ε in ``norm``, :meth:`advbench.TrainContext.eps_for`; the resolved ε keys the cached model), the
seeded generator, ``history`` (the curves below, which the runner saves and draws) and the
guard. ``attack_label`` names its examples in the history.

Monitoring. Before training, the training split is divided once, seeded by the run's seed:
``holdout`` samples are set aside and never trained on (the *validation* set: the training
split, never the test split), and ``monitor`` of the remaining samples, which are trained on,
form the fixed *train* batch. At the end of every epoch (or ``checks_per_epoch`` times per
epoch) clean accuracy and PGD robust accuracy are measured on both, in eval mode, with a
freshly seeded PGD, and appended to :attr:`AdversarialTraining.history`.

Guard. Fast adversarial training can *catastrophically overfit*: robust accuracy collapses to
near zero within an epoch while clean accuracy stays high (Wong et al. 2020). When the
validation robust accuracy (the train batch's if ``holdout`` is 0) falls below
``collapse_ratio`` × the best seen so far (once that best is at least ``collapse_min_best``),
training stops and the weights of the last check that passed are restored; the history records
it. A collapse before the first check cannot be undone: raise ``checks_per_epoch`` to catch one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from advbench.algorithms.pgd import model_gradient, pgd
from advbench.algorithms.training import train_classifier
from advbench.data import Split
from advbench.defense import Defense, TrainContext
from advbench.threat import ThreatModel

VALIDATION_NOTE = ("validation = samples of the training split set aside before training and "
                   "never trained on (seeded); train = a fixed seeded batch of the samples "
                   "trained on; the test split is never used")
MEASURE_BATCH = 512


@dataclass
class EpochRecord:
    """One check: accuracies after ``epoch`` epochs (fractional with several checks an epoch)."""

    epoch: float
    step: int
    loss: float
    lr: float
    seconds: float
    train_clean: float
    train_robust: float
    val_clean: float | None
    val_robust: float | None


@dataclass
class TrainingHistory:
    """The training curves of one adversarially trained model, and what the guard did."""

    defense: str
    config: dict[str, Any]
    attack: str
    validation: str = VALIDATION_NOTE
    records: list[EpochRecord] = field(default_factory=list)
    collapse: dict[str, Any] | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingHistory:
        fields = {**data, "records": [EpochRecord(**r) for r in data.get("records", [])]}
        return cls(**fields)


def split_for_monitoring(train: Split, holdout: int, monitor: int, seed: int
                         ) -> tuple[Split, Split, Split | None]:
    """(samples trained on, fixed monitored batch of them, held-out validation or None).

    A holdout that would take half the training set or more shrinks to a tenth of it, so tiny
    runs still train."""
    if holdout < 0 or monitor < 1:
        raise ValueError("need holdout >= 0 and monitor >= 1")
    if 2 * holdout >= len(train):
        holdout = len(train) // 10
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7919))
    kept, held = order[: len(train) - holdout].sort().values, order[len(train) - holdout :]
    fit = train.subset(kept)
    watched = fit.subset(torch.arange(min(monitor, len(fit))))
    return fit, watched, train.subset(held) if holdout else None


@torch.no_grad()
def measure(model: nn.Module, data: Split, threat: ThreatModel, steps: int,
            device: torch.device, seed: int) -> tuple[float, float]:
    """(clean accuracy, PGD robust accuracy) of ``model`` on ``data``; PGD with ``steps`` steps
    of 2.5ε/steps from a random start, seeded, so equal weights give equal numbers."""
    generator = torch.Generator(device=device).manual_seed(seed)
    gradient = model_gradient(model)
    clean = robust = 0
    for start in range(0, len(data), MEASURE_BATCH):
        x = data.x[start : start + MEASURE_BATCH].to(device)
        y = data.y[start : start + MEASURE_BATCH].to(device)
        correct = model(x).argmax(dim=1) == y
        clean += int(correct.sum())
        if steps > 0 and bool(correct.any()):
            x_adv = pgd(gradient, x[correct], y[correct], threat, steps=steps,
                        step_size=2.5 * threat.eps / steps, generator=generator)
            robust += int((model(x_adv).argmax(dim=1) == y[correct]).sum())
        else:
            robust += int(correct.sum())
    return clean / len(data), robust / len(data)


class CollapseGuard:
    """Keeps the weights of the last check that passed; reports a collapse of robust accuracy
    below ``ratio`` × the best so far (once the best reaches ``min_best``)."""

    def __init__(self, ratio: float, min_best: float) -> None:
        self.ratio, self.min_best = ratio, min_best
        self.best = 0.0
        self.good_state: dict[str, torch.Tensor] | None = None
        self.good_epoch: float | None = None

    def collapsed(self, robust: float) -> bool:
        return self.best >= self.min_best and robust < self.ratio * self.best

    def keep(self, model: nn.Module, robust: float, epoch: float) -> None:
        self.best = max(self.best, robust)
        self.good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.good_epoch = epoch

    def restore(self, model: nn.Module) -> None:
        if self.good_state is not None:
            model.load_state_dict(self.good_state)


@dataclass(kw_only=True)
class AdversarialTraining(Defense):
    """Base of adversarial-training defenses: trains on ``adversarial_examples`` (and a clean
    share ``clean_fraction`` of each batch), monitored and guarded as the module says.

    After ``fit``, ``history`` holds the :class:`TrainingHistory` (None before, and when the
    model came from the cache: the harness keeps it as JSON beside the cached model).
    """

    eps: float | None = field(default=None, metadata={"ge": 0})  # None: the run's ε in norm
    norm: str = "linf"
    clean_fraction: float = field(default=0.0, metadata={"ge": 0, "le": 1})
    holdout: int = field(default=256, metadata={"ge": 0})
    monitor: int = field(default=256, metadata={"ge": 1})
    guard_steps: int = field(default=10, metadata={"ge": 1})
    collapse_ratio: float = field(default=0.5, metadata={"ge": 0, "le": 1})
    collapse_min_best: float = field(default=0.1, metadata={"ge": 0, "le": 1})
    checks_per_epoch: int = field(default=1, metadata={"ge": 1})

    # Set by fit, not configuration (ClassVar keeps it out of config() and the cache key).
    history: ClassVar[TrainingHistory | None] = None

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"adversarial training steps in linf or l2, not {self.norm!r}")
        if not 0.0 <= self.clean_fraction <= 1.0:
            raise ValueError("clean_fraction must be in [0, 1]")
        if self.checks_per_epoch < 1:
            raise ValueError("checks_per_epoch must be >= 1")

    @property
    def threat(self) -> ThreatModel:
        """The ball training examples come from: ``eps``, or the run's ε during ``fit``."""
        if self.context is not None:
            eps = self.context.eps_for(self.norm, self.eps)
        elif self.eps is not None:
            eps = self.eps
        else:
            raise RuntimeError(f"{type(self).name}: eps is the run's, known only during fit")
        return ThreatModel(self.norm, eps)

    def resolved_training_config(self, ctx: TrainContext) -> dict[str, Any]:
        """The training config with the ε trained at, so each ε keys its own model."""
        return {**super().resolved_training_config(ctx), "eps": ctx.eps_for(self.norm, self.eps)}

    def attack_label(self) -> str:
        """How the training examples are made, for the history and the figure."""
        return type(self).name

    def adversarial_examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             generator: torch.Generator | None) -> torch.Tensor:
        """Adversarial versions of ``x`` against ``model`` (as it is now), inside ``threat``."""
        raise NotImplementedError

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      progress: float) -> torch.Tensor:
        """Cross-entropy over the batch: its first ``clean_fraction`` kept clean (the batch
        order is already random), the rest replaced by adversarial examples."""
        clean = round(self.clean_fraction * len(x))
        parts = [x[:clean]]
        if clean < len(x):
            generator = self.context.generator if self.context is not None else None
            parts.append(self.adversarial_examples(model, x[clean:], y[clean:], generator))
        return F.cross_entropy(model(torch.cat(parts)), y)

    def fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        """Train with the guard; a pretrained (user) model is fine-tuned the same way."""
        with self.using(ctx):
            return self._fit(model, train, ctx)

    def _fit(self, model: nn.Module, train: Split, ctx: TrainContext) -> nn.Module:
        fit_split, watched, validation = split_for_monitoring(train, self.holdout,
                                                              self.monitor, ctx.seed)
        history = TrainingHistory(type(self).name, self.resolved_training_config(ctx),
                                  self.attack_label())
        self.history = history  # type: ignore[misc]  # the instance's, over the ClassVar
        guard = CollapseGuard(self.collapse_ratio, self.collapse_min_best)
        started, measuring = time.perf_counter(), 0.0

        def check(epoch: float, step: int, loss: float, lr: float) -> bool:
            nonlocal measuring
            seconds = time.perf_counter() - started - measuring
            model.eval()
            record = EpochRecord(epoch, step, loss, lr, seconds,
                                 *self._accuracies(model, watched, validation, ctx))
            measuring = time.perf_counter() - started - seconds
            history.records.append(record)
            robust = record.val_robust if record.val_robust is not None else record.train_robust
            if guard.collapsed(robust):
                guard.restore(model)
                history.collapse = {"epoch": epoch, "robust": robust, "best": guard.best,
                                    "restored_epoch": guard.good_epoch}
                history.stopped_early = True
                return True
            guard.keep(model, robust, epoch)
            return False

        train_classifier(model, fit_split, ctx, self.training_loss, check, self.checks_per_epoch)
        return model

    def _accuracies(self, model: nn.Module, watched: Split, validation: Split | None,
                    ctx: TrainContext) -> tuple[float, float, float | None, float | None]:
        """(train clean, train robust, validation clean, validation robust)."""
        seed = ctx.seed + 2
        train = measure(model, watched, self.threat, self.guard_steps, ctx.device, seed)
        if validation is None:
            return (*train, None, None)
        return (*train, *measure(model, validation, self.threat, self.guard_steps, ctx.device,
                                 seed))

