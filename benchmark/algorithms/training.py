"""The training loop every training-time defense shares (``Defense.fit``'s default).

Order, which a ``training_loss`` may rely on::

    for each epoch, for each shuffled batch (order seeded by ctx.seed):
        model.train()
        loss = loss_fn(model, x, y, progress)   # x, y already on ctx.device
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step(); schedule.step()       # Adam, one-cycle learning rate
        ctx.on_batch()
        check(...) at its points, if given       # the adversarial-training monitor; True stops
    model.eval()                                # fit returns an eval-mode model

So a loss is called in train mode and returns a scalar still attached to the graph. It may
switch ``model.eval()`` to make adversarial examples (batch-norm statistics frozen, no dropout),
but the forward pass of the loss it returns runs in the mode it means (normally
``model.train()`` again); the mode it leaves the model in does not matter, since the next batch
starts with ``model.train()``. It must not call ``backward`` on the loss it returns nor touch an
optimizer; parameter gradients it makes while attacking (``autograd.grad`` is cleaner) are
cleared by the ``zero_grad`` that follows it. ``progress`` is the share of steps done, from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from advbench.data import Split

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


CheckFn = Callable[[float, int, float, float], bool]


class LoopSettings(Protocol):
    """What the loop reads of :class:`advbench.TrainSettings`."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...


class LoopContext(Protocol):
    """What the loop reads of :class:`advbench.TrainContext`. Described here rather than
    imported: ``defense.py`` imports this module for ``Defense.fit``, and the layers point one
    way."""

    @property
    def settings(self) -> LoopSettings: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def seed(self) -> int: ...
    @property
    def on_batch(self) -> Callable[[], None]: ...


def train_classifier(model: nn.Module, train: Split, ctx: LoopContext, loss_fn: LossFn,
                     check: CheckFn | None = None, checks_per_epoch: int = 1) -> None:
    """Adam with a one-cycle learning-rate schedule (peak ``settings.lr``) over shuffled
    minibatches, the order seeded by ``ctx.seed``. One-cycle reaches the seed CNN's accuracy in
    a few epochs, which is what a CPU budget affords.

    ``check(epoch, step, mean_loss, lr)``, if given, is called ``checks_per_epoch`` times an
    epoch (adversarial training's monitor); training stops when it returns True.
    """
    settings = ctx.settings
    n = len(train)
    batches = -(-n // settings.batch_size)
    total_steps = settings.epochs * batches
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps)
    order_rng = torch.Generator().manual_seed(ctx.seed)
    check_at = {round(batches * (i + 1) / checks_per_epoch) for i in range(checks_per_epoch)}
    step = 0
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=order_rng)
        loss_sum, count = torch.zeros((), device=ctx.device), 0
        for batch, start in enumerate(range(0, n, settings.batch_size), 1):
            index = order[start : start + settings.batch_size]
            x, y = train.x[index].to(ctx.device), train.y[index].to(ctx.device)
            model.train()
            loss = loss_fn(model, x, y, step / total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            ctx.on_batch()
            if check is None:
                continue
            loss_sum, count = loss_sum + loss.detach(), count + 1
            if batch in check_at:
                stop = check(epoch + batch / batches, step, float(loss_sum) / count,
                             float(schedule.get_last_lr()[0]))
                loss_sum, count = torch.zeros((), device=ctx.device), 0
                if stop:
                    model.eval()
                    return
    model.eval()


def training_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Number of optimizer steps ``train_classifier`` will take (for progress bars)."""
    return epochs * -(-n_train // batch_size)
