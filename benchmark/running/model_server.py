"""The model server: ``python -m advbench.running.model_server FD`` serves a defended classifier.

A declared defense that wraps its model (#29) is built here, not in the harness: the harness
(:mod:`.served`) sends the defense's module, class and arguments and the trained model; this
process builds the real defense, calls its ``wrap`` and ``bpda_surrogate``, and then answers
the harness's requests on them (forward passes, vector-Jacobian products, ``predict``,
``certify``, ``reseed``) until the harness closes the connection. Whatever the defense does here
stays here: it cannot reach the gate, the tally or the results.

Each request may carry the harness's global random state; it is set before the defense runs and
sent back after, so that a defense drawing its noise from the global stream draws what it would
have drawn in the harness.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import torch
from torch import nn

from advbench._util import one_line
from advbench.defense import Certifier, Defense, Reseedable, declared_surrogate
from advbench.plugin_system.declared import rebuild
from advbench.running.wire import receive, send

# Forward passes kept for a backward the harness has not freed yet: an EOT gradient holds one
# per draw (--eot-samples is at most 10 000); the harness frees each with its own graph.
MAX_GRAPHS = 1 << 14


def capabilities(module: nn.Module) -> dict[str, Any]:
    """What the harness's stand-in must offer besides ``forward``: the protocols bench checks."""
    found: dict[str, Any] = {"reseed": isinstance(module, Reseedable),
                             "predict": callable(getattr(module, "predict", None)),
                             "certify": isinstance(module, Certifier)}
    if found["certify"]:
        found.update(certifier=str(module.certifier), certified_norm=str(module.certified_norm))
    return found


def build(header: dict[str, Any], blob: bytes | None) -> tuple[dict[str, nn.Module], bool]:
    """The defense's classifier and surrogate, by role; whether ``wrap`` returned the model.
    :class:`Refused` says which step raised."""
    sys.path[:] = header["path"]  # before unpickling: the model's class is imported by name
    torch.set_num_threads(header["threads"])
    request, model = pickle.loads(blob or b"")
    with step("building the defense"):
        defense = rebuild(request["module"], request["qualname"], request["arguments"])
    if not isinstance(defense, Defense):
        raise Refused(f"{request['qualname']} is not a Defense")
    model = model.eval()
    with step("wrap()"):
        wrapped = defense.wrap(model)
    if not isinstance(wrapped, nn.Module):
        raise Refused(f"wrap() returned {type(wrapped).__name__}, not an nn.Module")
    roles = {"model": wrapped.eval()}
    with step("bpda_surrogate()"):
        surrogate = declared_surrogate(defense, model)
    if surrogate is not None:
        roles["surrogate"] = surrogate
    return roles, wrapped is model


class Refused(Exception):
    """Building the served modules failed: the message is the harness's reason."""


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:  # SystemExit too: the harness learns why, then the rows do
        raise Refused(f"{what} raised {one_line(exc)}") from exc


class Server:
    """The defense's modules and the forward passes a backward may still come for."""

    def __init__(self, roles: dict[str, nn.Module]) -> None:
        self.roles = roles
        self.device = next(iter(roles["model"].parameters()), torch.empty(0)).device
        self.graphs: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.ids = itertools.count()

    def answer(self, header: dict[str, Any], tensors: list[torch.Tensor]
               ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        for graph in header.get("free", []):
            self.graphs.pop(graph, None)
        op, module = header["op"], self.roles[header.get("role", "model")]
        if op == "backward":
            return {}, [self.backward(header["id"], tensors[0])]
        if op == "reseed":
            module.reseed(header["seed"])  # type: ignore[operator]
            return {}, []
        x, states = tensors[0].to(self.device), tensors[1:]
        set_random_state(states)
        if op == "forward":
            found, out = self.forward(module, x, header["graph"])
        elif op == "predict":
            found, out = {}, [module.predict(x)]  # type: ignore[operator]
        elif op == "certify":
            labels, radii = module.certify(x)  # type: ignore[operator]
            found, out = {}, [labels, radii]
        else:
            raise ValueError(f"unknown request {op!r}")
        return found, [t.detach() for t in out] + random_state(len(states))

    def forward(self, module: nn.Module, x: torch.Tensor, graph: bool
                ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        if not graph:
            with torch.no_grad():
                return {}, [module(x)]
        x = x.requires_grad_()
        with torch.enable_grad():
            out = module(x)
        key = next(self.ids)
        self.graphs[key] = (x, out)
        while len(self.graphs) > MAX_GRAPHS:
            self.graphs.popitem(last=False)
        return {"id": key}, [out]

    def backward(self, key: int, grad: torch.Tensor) -> torch.Tensor:
        if key not in self.graphs:
            raise RuntimeError(f"a backward came after {MAX_GRAPHS} newer forward passes; "
                               "differentiate sooner")
        x, out = self.graphs[key]
        if not out.requires_grad:
            return torch.zeros_like(x)
        (found,) = torch.autograd.grad(out, x, grad.to(out.device, out.dtype),
                                       retain_graph=True, allow_unused=True,
                                       materialize_grads=True)
        return found


def random_state(count: int) -> list[torch.Tensor]:
    """The global random state: the CPU's, then each CUDA device's (``count`` in all)."""
    states = [torch.get_rng_state()]
    if count > 1:
        states += torch.cuda.get_rng_state_all()
    return states[:count]


def set_random_state(states: list[torch.Tensor]) -> None:
    if states:
        torch.set_rng_state(states[0])
    if len(states) > 1 and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states[1:])


def serve(conn: Connection) -> None:
    header, _, blob = receive(conn, trust_blob=True)
    try:
        roles, identity = build(header, blob)
    except Refused as exc:
        send(conn, {"op": "raised", "message": str(exc)})
        return
    send(conn, {"op": "ready", "identity": identity,
                "roles": {role: capabilities(module) for role, module in roles.items()}})
    server = Server(roles)
    while True:
        try:
            header, tensors, _ = receive(conn)
        except EOFError:
            return
        try:
            found, out = server.answer(header, tensors)
            send(conn, {"op": "answer", **found}, out)
        except Exception as exc:  # the defense raised: this request fails, the server stays
            send(conn, {"op": "raised",
                        "message": f"the defense's {header.get('op')} raised {one_line(exc)}"})


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    except (EOFError, OSError):
        pass
    finally:
        sys.stdout.flush()
        os._exit(0)  # threads the defense started do not keep the process alive


if __name__ == "__main__":
    main()
