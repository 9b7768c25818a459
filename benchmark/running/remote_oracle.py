"""The oracle an isolated attack gets: the public :class:`advbench.oracle.Oracle` interface, each
call a request to the harness, which answers it with its own oracle on the defended model.

The attack process holds no model: ``gradient`` with one of the public losses is computed in the
harness in one request; with a loss of the attack's own, the harness sends the logits, the
attack process differentiates its loss of them, and the harness carries that gradient back to
the input (two requests, one query). ``logits`` is differentiable the same way: its backward is
a request, as is its forward-mode derivative: ``torch.func.grad``, ``jvp`` and ``vmap`` work
through it (under ``vmap`` every lane goes in one request).
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

import torch
from torch._C import _functorch as functorch

from advbench.algorithms import losses
from advbench.oracle import AccessError, LossFn, QueryBudgetExceeded, cross_entropy_sum, to_numpy
from advbench.running.wire import receive, send

# The losses the harness evaluates itself, by name (one request instead of two).
PUBLIC_LOSSES: dict[str, LossFn] = {
    "cross_entropy_sum": cross_entropy_sum, "margin_loss": losses.margin_loss,
    "dlr_loss": losses.dlr_loss, "negative_cross_entropy": losses.negative_cross_entropy,
}
# Errors the harness's oracle raises that an attack may catch, by name.
ERRORS: dict[str, type[Exception]] = {
    "QueryBudgetExceeded": QueryBudgetExceeded, "AccessError": AccessError,
    "ValueError": ValueError, "TypeError": TypeError, "IndexError": IndexError,
}


def loss_name(loss: LossFn) -> str | None:
    """The public loss ``loss`` is, by name; None for a loss of the attack's own."""
    return next((name for name, fn in PUBLIC_LOSSES.items() if fn is loss), None)


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """The values of ``tensor`` (read outside ``torch.func``'s transforms), on the CPU."""
    return torch.from_numpy(to_numpy(tensor))


class RemoteOracle:
    """:class:`advbench.oracle.Oracle`'s interface over the connection to the harness."""

    def __init__(self, conn: Connection, access: str, n: int, max_queries: int | None,
                 eot_samples: int, device: torch.device) -> None:
        self._conn, self._device = conn, device
        self.access, self.max_queries, self.eot_samples = access, max_queries, eot_samples
        self.queries = torch.zeros(n, dtype=torch.long, device=device)

    def _ask(self, op: str, tensors: list[torch.Tensor], index: torch.Tensor | None,
             **fields: Any) -> list[torch.Tensor]:
        """One request and its answer; the harness's error raised here, as the oracle would."""
        if index is not None:
            index = index if isinstance(index, torch.Tensor) else torch.as_tensor(index)
            tensors = [*tensors, plain(index).reshape(-1).to(torch.int64)]
        send(self._conn, {"op": op, "index": index is not None, **fields},
             [plain(t) for t in tensors])
        header, answer, _ = receive(self._conn, trust_blob=True)
        if "error" in header:
            raise ERRORS.get(header["error"], RuntimeError)(header["message"])
        *values, queries = answer
        with torch._C._DisableFuncTorch():
            self.queries = queries.to(self._device)
        return [v.to(self._device) for v in values]

    def logits(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logits (gradient access): the harness's, its backward a request
        (asked for only where a gradient may follow: grad mode on, ``x`` tracked)."""
        if torch.is_grad_enabled() and (x.requires_grad
                                        or functorch.is_functorch_wrapped_tensor(x)):
            out: torch.Tensor = RemoteLogits.apply(x, self, index)
            return out
        return self._forward(x, index, keep=False)[0]

    def _forward(self, x: torch.Tensor, index: torch.Tensor | None, keep: bool
                 ) -> tuple[torch.Tensor, int]:
        """The logits, and the id under which the harness keeps their graph (−1: not kept)."""
        logits, graph = self._ask("logits", [x], index, keep=keep)
        return logits.to(x.dtype), int(graph)

    def _backward(self, graph: int, grad_logits: torch.Tensor) -> torch.Tensor:
        (grad,) = self._ask("backward", [grad_logits], None, graph=graph)
        return grad

    def _jvp(self, graph: int, tangents: torch.Tensor) -> torch.Tensor:
        """Jacobian-vector products of kept logits, one per tangent (``tangents[k]``)."""
        (out,) = self._ask("jvp", [tangents], None, graph=graph)
        return out

    def gradient(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None,
                 loss: LossFn = cross_entropy_sum) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of ``loss(logits, y)`` with respect to ``x``, and the logits (detached)."""
        name = loss_name(loss)
        if name is not None:
            grad, logits = self._ask("gradient", [x, y], index, loss=name)
            return grad, logits
        logits, graph = self._forward(x, index, keep=True)
        leaf = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            value = loss(leaf, y)
        grad_logits = (torch.autograd.grad(value, leaf, allow_unused=True,
                                           materialize_grads=True)[0]
                       if value.requires_grad else torch.zeros_like(leaf))
        return self._backward(graph, grad_logits), logits

    @torch.no_grad()
    def scores(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities, detached (scores or gradient access); one draw."""
        (scores,) = self._ask("scores", [x], index)
        return scores

    @torch.no_grad()
    def labels(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted labels (any access level); −1 where a defended model abstains."""
        (labels,) = self._ask("labels", [x], index)
        return labels


def lanes_first(tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    """``tensor`` with its ``vmap`` dimension ``dim`` first and merged into the rows, and the
    number of lanes."""
    moved = tensor.movedim(dim, 0)
    return moved.reshape(moved.shape[0] * moved.shape[1], *moved.shape[2:]), moved.shape[0]


def per_lane(tensor: torch.Tensor, lanes: int) -> torch.Tensor:
    """Rows merged by :func:`lanes_first` split back into ``lanes``."""
    return tensor.reshape(lanes, tensor.shape[0] // lanes, *tensor.shape[1:])


class RemoteLogits(torch.autograd.Function):
    """``oracle.logits`` as an autograd function: forward, backward and the forward-mode
    derivative are requests; under ``vmap`` the lanes go in one request (every lane charged,
    as in-process)."""

    @staticmethod
    def forward(x: torch.Tensor, oracle: RemoteOracle, index: torch.Tensor | None
                ) -> torch.Tensor:
        logits, graph = oracle._forward(x, index, keep=True)
        oracle._last_graph = graph  # type: ignore[attr-defined]
        return logits

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.oracle = inputs[1]
        ctx.graph = inputs[1]._last_graph

    @staticmethod
    def backward(ctx: Any, grad_logits: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return RemoteBackward.apply(grad_logits, ctx.oracle, ctx.graph), None, None

    @staticmethod
    def jvp(ctx: Any, x_tangent: torch.Tensor, *_: Any) -> torch.Tensor:
        out: torch.Tensor = RemoteJvp.apply(x_tangent, ctx.oracle, ctx.graph)
        return out

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], x: torch.Tensor,
             oracle: RemoteOracle, index: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        x_dim, _, index_dim = in_dims
        if x_dim is None:  # only the index is batched: every lane queries the same rows
            x_dim, x = 0, x.expand(info.batch_size, *x.shape)
        rows, lanes = lanes_first(x, x_dim)
        if index is None:
            index = torch.arange(x.shape[x_dim + 1 if x_dim == 0 else 0], device=x.device)
        lane_index = (index.repeat(lanes) if index_dim is None
                      else lanes_first(index.unsqueeze(-1), index_dim)[0].reshape(-1))
        out = RemoteLogits.apply(rows, oracle, lane_index)
        return per_lane(out, lanes), 0


class RemoteBackward(torch.autograd.Function):
    """The harness's vector-Jacobian product for kept logits; under ``vmap``, of all lanes."""

    @staticmethod
    def forward(grad_logits: torch.Tensor, oracle: RemoteOracle, graph: int) -> torch.Tensor:
        return oracle._backward(graph, grad_logits)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], grad_logits: torch.Tensor,
             oracle: RemoteOracle, graph: int) -> tuple[torch.Tensor, int]:
        rows, lanes = lanes_first(grad_logits, in_dims[0] or 0)
        return per_lane(RemoteBackward.apply(rows, oracle, graph), lanes), 0


class RemoteJvp(torch.autograd.Function):
    """The harness's Jacobian-vector product for kept logits; under ``vmap``, one request for
    every lane's tangent."""

    @staticmethod
    def forward(tangent: torch.Tensor, oracle: RemoteOracle, graph: int) -> torch.Tensor:
        return oracle._jvp(graph, tangent[None])[0]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], tangent: torch.Tensor,
             oracle: RemoteOracle, graph: int) -> tuple[torch.Tensor, int]:
        return oracle._jvp(graph, tangent.movedim(in_dims[0] or 0, 0)), 0
