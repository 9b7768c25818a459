"""The classifier as an attack may see it: gradients, scores only, or labels only.

The oracle counts one query per sample per forward pass and enforces the query budget, so the
query numbers in the results are the harness's, never the plugin's. In a cell, the harness also
hands it a :class:`~advbench.guard.Watch`: every model call goes through it, so the harness
knows which passes came through the oracle and tallies their queries where the attack does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from advbench.running.guard import Watch

ACCESS_LEVELS = ("gradient", "scores", "decision")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AccessError(RuntimeError):
    """The attack asked for more than its declared access level allows."""


class QueryBudgetExceeded(RuntimeError):
    """A query would take some sample past its budget; the query was not run."""


def cross_entropy_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy: its gradient for each sample is that sample's own loss gradient."""
    return nn.functional.cross_entropy(logits, y, reduction="sum")


class Oracle:
    """Query access to ``model`` for one batch of ``n`` samples.

    Every method takes an optional ``index`` (a LongTensor, one entry per row of ``x``) naming
    which sample of the batch each row belongs to, so attacks that query subsets or many
    candidates per sample are charged per sample. Without it, ``x`` must hold the whole batch.

    With a ``surrogate`` (BPDA, Athalye, Carlini & Wagner 2018: the unwrapped trained model
    behind an inference-time wrapper), gradients are those of the surrogate, as if the wrapper
    were the identity, while every value returned is the defended model's own.
    """

    def __init__(
        self, model: nn.Module, access: str, n: int, max_queries: int | None = None,
        eot_samples: int = 1, guard: Watch | None = None, surrogate: nn.Module | None = None,
    ) -> None:
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {ACCESS_LEVELS}, got {access!r}")
        self._model = model
        self.access = access
        self.max_queries = max_queries
        self.eot_samples = eot_samples
        self._guard = guard
        self._surrogate = surrogate
        device = next(iter(model.parameters()), torch.empty(0)).device
        self.queries = torch.zeros(n, dtype=torch.long, device=device)

    def _charge(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if index is None:
            if x.shape[0] != self.queries.shape[0]:
                raise ValueError("pass index= when querying a subset of the batch")
            index = torch.arange(x.shape[0], device=self.queries.device)
        after = self.queries.index_add(0, index.to(self.queries.device), torch.ones_like(index))
        if self.max_queries is not None and bool((after > self.max_queries).any()):
            raise QueryBudgetExceeded(f"query budget of {self.max_queries} per sample exhausted")
        self.queries = after
        return index

    def _query(self, level: str, x: torch.Tensor, index: torch.Tensor | None,
               rows: int | None) -> contextlib.AbstractContextManager[None]:
        """Charge the samples of ``x``, then (in a cell) tell the guard that the model runs on
        ``rows`` inputs at ``level`` access (``rows`` None: the model's ``predict`` decides)."""
        index = self._charge(x, index)
        if self._guard is None:
            return contextlib.nullcontext()
        return self._guard.query(level, index, rows)

    def _require(self, level: str) -> None:
        if self.access != "gradient" and level == "gradient":
            raise AccessError(f"this attack declared access={self.access!r}: no gradients")
        if self.access == "decision" and level == "scores":
            raise AccessError("this attack declared access='decision': labels only, no scores")

    def logits(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logits (gradient access only); with a surrogate, the defended model's
        values carrying the surrogate's gradient (straight through)."""
        return self._logit_pair(x, index)[0]

    def _logit_pair(self, x: torch.Tensor, index: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One query: the logits an attack sees, and the logits its loss is differentiated on
        (the same tensor unless a surrogate stands in for the backward pass)."""
        self._require("gradient")
        with self._query("gradient", x, index, len(x)):
            if self._surrogate is None:
                shown = self._model(x)
                return shown, shown
            with torch.no_grad():
                shown = self._model(x)
            used = self._surrogate(x)
        return shown + (used - used.detach()), used

    def gradient(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        index: torch.Tensor | None = None,
        loss: LossFn = cross_entropy_sum,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of ``loss(logits, y)`` with respect to ``x``, and the logits (detached).

        Against a randomized model (``eot_samples`` > 1) this is the Expectation over
        Transformation estimate (Athalye et al. 2018): the mean over that many draws, each
        charged as a query, so a random defense cannot hide behind one noisy gradient. With a
        surrogate, the loss is the surrogate's (BPDA) and the logits returned the defended
        model's.
        """
        x = x.detach().requires_grad_(True)
        grads, outputs = [], []
        with torch.enable_grad():
            for _ in range(self.eot_samples):
                shown, used = self._logit_pair(x, index)
                grads.append(torch.autograd.grad(loss(used, y), x)[0])
                outputs.append(shown.detach())
        return torch.stack(grads).mean(dim=0), torch.stack(outputs).mean(dim=0)

    @torch.no_grad()
    def scores(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities, detached (scores or gradient access)."""
        self._require("scores")
        with self._query("scores", x, index, len(x)):
            return self._model(x).softmax(dim=1)

    @torch.no_grad()
    def labels(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted labels (any access level); −1 where a defended model abstains."""
        own = callable(getattr(self._model, "predict", None))
        with self._query("decision", x, index, None if own else len(x)):
            return model_labels(self._model, x)


def model_labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's decision: its own ``predict`` (which may abstain with −1) when it defines
    one, as randomized smoothing does, else the argmax of its logits."""
    predict = getattr(model, "predict", None)
    return predict(x) if callable(predict) else model(x).argmax(dim=1)
