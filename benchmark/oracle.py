"""The classifier as an attack may see it: gradients, scores only, or labels only.

The oracle counts one query per sample per request of the attack (per row of each call) and
enforces the query budget, so the query numbers in the results are the harness's, never the
plugin's. Against a randomized defended model a gradient-level query (``logits``, ``gradient``)
answers with the expectation over ``eot_samples`` draws of the model (EOT): the draws behind one
query are the harness's business and are not queries. In a cell, the harness also hands the
oracle a :class:`Watch` (the seal's, :class:`advbench.seal.Watch`): every model call goes
through it, so the harness knows which passes came through the oracle and tallies their queries
where the attack does not.

Counts are kept in NumPy, outside autograd and ``torch.func``: an attack may call the oracle
inside ``torch.func.grad``, ``jvp`` or ``vmap`` (a ``vmap`` over candidates is charged for every
row the model really runs on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch._C import _functorch as functorch

ACCESS_LEVELS = ("gradient", "scores", "decision")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Watch(Protocol):
    """What the oracle needs of the harness's watch over one attack batch: told of each model
    call, it tallies the call's charges and knows that the model runs inside the oracle.
    :class:`advbench.seal.Watch` is the harness's; the oracle needs nothing else of the seal."""

    def query(self, level: str, positions: np.ndarray, rows: int | None
              ) -> contextlib.AbstractContextManager[None]:
        """Around one model call at access ``level`` charged to the samples at ``positions``
        (one entry per row charged), running the model on ``rows`` inputs (None: the model's
        own ``predict`` decides how often)."""
        ...


class AccessError(RuntimeError):
    """The attack asked for more than its declared access level allows."""


class QueryBudgetExceeded(RuntimeError):
    """A query would take some sample past its budget; the query was not run."""


def cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy: its gradient for each sample is that sample's own loss gradient."""
    return nn.functional.cross_entropy(logits, y, reduction="sum")


def unwrapped(tensor: torch.Tensor) -> torch.Tensor:
    """The plain tensor behind ``torch.func``'s wrappers (``grad``/``jvp`` levels, ``vmap``
    batches): under ``vmap`` it holds every lane, so its size is what the model really runs on."""
    while functorch.is_functorch_wrapped_tensor(tensor):
        tensor = functorch.get_unwrapped(tensor)
    return tensor


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A plain copy of ``tensor``'s values, read with ``torch.func``'s transforms switched off
    (inside them even a plain tensor's ``detach`` would be wrapped)."""
    with torch._C._DisableFuncTorch(), torch.no_grad():
        return unwrapped(tensor).detach().cpu().numpy().copy()


def charged_positions(x: torch.Tensor, index: torch.Tensor | None, n: int) -> np.ndarray:
    """The batch position of every row the model will run on for a query on ``x``: one entry
    per row of ``x``, times the ``vmap`` lanes ``x`` is batched over and ``index`` is not."""
    if index is None:
        if x.shape[0] != n:
            raise ValueError("pass index= when querying a subset of the batch")
        positions = np.arange(n)
    else:
        index = index if isinstance(index, torch.Tensor) else torch.as_tensor(index)
        if index.dim() != 1 or index.shape[0] != x.shape[0]:
            raise ValueError(f"index must name one batch position per row of x: got shape "
                             f"{tuple(index.shape)} for {x.shape[0]} rows")
        if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
            raise ValueError(f"index must be an integer tensor, not {index.dtype}")
        positions = to_numpy(index).reshape(-1).astype(np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= n):
            raise ValueError(f"index names batch positions outside [0, {n})")
    rows = (unwrapped(x).numel() // x.numel()) * x.shape[0] if x.numel() else 0
    if len(positions) == 0 or rows == 0:
        return positions[:0]
    if rows % len(positions):
        raise ValueError("vmap over index and x differently: batch both, or only x")
    return np.tile(positions, rows // len(positions))


class Oracle:
    """Query access to ``model`` for one batch of ``n`` samples.

    Every method takes an optional ``index`` (a LongTensor, one entry per row of ``x``) naming
    which sample of the batch each row belongs to, so attacks that query subsets or many
    candidates per sample are charged per sample. Without it, ``x`` must hold the whole batch.

    One call charges one query per row (``queries``, per sample), whatever ``eot_samples``: with
    ``eot_samples`` > 1 (a randomized model), ``logits`` is the mean of that many draws and
    ``gradient`` the gradient of the loss of that mean (Expectation over Transformation,
    Athalye et al. 2018). ``scores`` and ``labels`` are one draw.

    With a ``surrogate`` (BPDA, Athalye, Carlini & Wagner 2018: the unwrapped trained model
    behind an inference-time wrapper, or the defense's own ``bpda_surrogate``), gradients are
    those of the surrogate, while every value returned is the defended model's own.
    """

    def __init__(
        self, model: nn.Module, access: str, n: int, max_queries: int | None = None,
        eot_samples: int = 1, guard: Watch | None = None, surrogate: nn.Module | None = None,
    ) -> None:
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {ACCESS_LEVELS}, got {access!r}")
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be at least 1, got {eot_samples}")
        self._model = model
        self.access = access
        self.max_queries = max_queries
        self.eot_samples = eot_samples
        self._guard = guard
        self._surrogate = surrogate
        self._device = next(iter(model.parameters()), torch.empty(0)).device
        self._counts = np.zeros(n, dtype=np.int64)
        self.queries = torch.zeros(n, dtype=torch.long, device=self._device)

    def _charge(self, x: torch.Tensor, index: torch.Tensor | None) -> np.ndarray:
        positions = charged_positions(x, index, len(self._counts))
        after = self._counts.copy()
        np.add.at(after, positions, 1)
        if self.max_queries is not None and bool((after > self.max_queries).any()):
            raise QueryBudgetExceeded(f"query budget of {self.max_queries} per sample exhausted")
        self._counts = after
        self.queries = counts_tensor(after, self._device)
        return positions

    def _query(self, level: str, x: torch.Tensor, index: torch.Tensor | None,
               rows: int | None) -> contextlib.AbstractContextManager[None]:
        """Charge the samples of ``x``, then (in a cell) tell the guard that the model runs on
        ``rows`` inputs at ``level`` access (``rows`` None: the model's ``predict`` decides)."""
        positions = self._charge(x, index)
        if self._guard is None:
            return contextlib.nullcontext()
        return self._guard.query(level, positions, rows)

    def _require(self, level: str) -> None:
        if self.access != "gradient" and level == "gradient":
            raise AccessError(f"this attack declared access={self.access!r}: no gradients")
        if self.access == "decision" and level == "scores":
            raise AccessError("this attack declared access='decision': labels only, no scores")

    def logits(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logits (gradient access only): against a randomized model, the mean
        over ``eot_samples`` draws, so a loss of the attack's own gets the EOT gradient; with
        a surrogate, the defended model's values carrying the surrogate's gradient (straight
        through). One query per row."""
        shown, used = self._logit_pair(x, index)
        return shown if used is None else shown + (used - used.detach())

    def _logit_pair(self, x: torch.Tensor, index: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One query: the logits an attack sees (mean over the draws), and the surrogate's
        logits its loss is differentiated on (None without a surrogate)."""
        self._require("gradient")
        shown, used = [], []
        with self._query("gradient", x, index, len(x) * self.eot_samples):
            for _ in range(self.eot_samples):
                if self._surrogate is None:
                    shown.append(self._model(x))
                    continue
                with torch.no_grad():
                    shown.append(self._model(x))
                used.append(self._surrogate(x))
        return expectation(shown), expectation(used) if used else None

    def gradient(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor | None = None,
        loss: LossFn = cross_entropy_sum,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of ``loss(logits, y)`` with respect to ``x``, and the logits (detached).

        One query per row: ``logits`` are those of :meth:`logits` (against a randomized model
        the mean over ``eot_samples`` draws, so this is the EOT gradient of the loss of the
        expected logits). With a surrogate, the loss is the surrogate's (BPDA: its gradient,
        not that of the defended model's values) and the logits returned the defended model's.
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            shown, used = self._logit_pair(x, index)
            value = loss(shown if used is None else used, y)
            # logits that ignore x (a constant model) have a zero gradient, not an error
            grad = (torch.autograd.grad(value, x, allow_unused=True, materialize_grads=True)[0]
                    if value.requires_grad else torch.zeros_like(x))
        return grad, shown.detach()

    @torch.no_grad()
    def scores(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities, detached (scores or gradient access); one draw."""
        self._require("scores")
        with self._query("scores", x, index, len(x)):
            return torch.softmax(self._model(x), dim=1)

    @torch.no_grad()
    def labels(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted labels (any access level); −1 where a defended model abstains; one draw."""
        own = callable(getattr(self._model, "predict", None))
        with self._query("decision", x, index, None if own else len(x)):
            return model_labels(self._model, x)


def counts_tensor(counts: np.ndarray, device: torch.device) -> torch.Tensor:
    """Per-sample counts as a plain long tensor on ``device``, made outside ``torch.func``'s
    transforms (so that none of them wraps it)."""
    with torch._C._DisableFuncTorch():
        return torch.from_numpy(counts.copy()).to(device)


def expectation(draws: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the draws (the draw itself when there is one: the same tensor, same graph)."""
    return draws[0] if len(draws) == 1 else torch.stack(draws).mean(dim=0)


def model_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's decision: its own ``predict`` (which may abstain with −1) when it defines
    one, as randomized smoothing does, else the argmax of its logits."""
    predict = getattr(model, "predict", None)
    labels: torch.Tensor = predict(x) if callable(predict) else model(x).argmax(dim=1)
    return labels
