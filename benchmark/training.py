"""The training loop every training-time defense shares, and the safetensors model cache."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .data import Split
from .defense import TrainContext

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


CheckFn = Callable[[float, int, float, float], bool]


def train_classifier(model: nn.Module, train: Split, ctx: TrainContext, loss_fn: LossFn,
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
    model.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=order_rng)
        loss_sum, count = torch.zeros((), device=ctx.device), 0
        for batch, start in enumerate(range(0, n, settings.batch_size), 1):
            index = order[start : start + settings.batch_size]
            x, y = train.x[index].to(ctx.device), train.y[index].to(ctx.device)
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
                             schedule.get_last_lr()[0])
                loss_sum, count = torch.zeros((), device=ctx.device), 0
                model.train()
                if stop:
                    model.eval()
                    return
    model.eval()


def training_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Number of optimizer steps ``train_classifier`` will take (for progress bars)."""
    return epochs * -(-n_train // batch_size)


def content_key(parts: dict[str, Any]) -> str:
    """A stable hash of everything that determines a result or a model."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tensor_hash(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes (~0.15 s for Fashion-MNIST's training
    split): two data sets with the same number of samples must not share a key."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:20]


def data_fingerprint(split: Split) -> str:
    """The model cache's key for the training data: a hash of the images and labels actually
    trained on, computed once per split and kept on it."""
    if split.fingerprint is None:
        split.fingerprint = tensor_hash(split.x, split.y)
    return split.fingerprint


class ModelCache:
    """Trained weights as ``<key>.safetensors``; the key's inputs are stored in the metadata and
    compared on load, so a corrupt or mismatched file is retrained, never trusted."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str, parts: dict[str, Any], model: nn.Module) -> bool:
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if metadata.get("key") != json.dumps(parts, sort_keys=True, default=str):
                return False
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception:  # corrupt, truncated or foreign: the caller retrains
            return False
        return True

    def save(self, key: str, parts: dict[str, Any], model: nn.Module) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in
                 model.state_dict().items()}
        metadata = {"key": json.dumps(parts, sort_keys=True, default=str)}
        handle, temporary = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(handle)
        try:
            save_file(state, temporary, metadata=metadata)
            os.replace(temporary, self.path(key))
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
