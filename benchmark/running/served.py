"""A declared defense's classifier, served from a process of its own (#29).

A defense whose module the plugin catalog declared (:mod:`advbench.plugin_system.declared`) may
wrap its trained model. Its ``wrap`` and ``bpda_surrogate`` then run in a model server
(:mod:`.model_server`), and the harness gets a :class:`ServedClassifier`: an ``nn.Module`` whose
forward pass is a request to that process, and whose backward is another (a vector-Jacobian
product computed there). So the oracle, EOT, BPDA, the seal's hooks, grading and certification
work on it as on any module, while the defense's code never runs in the harness. What comes
back is never unpickled: logits, gradients, labels and radii are checked for shape and dtype.

Each request carries the harness's global random state and brings the server's back, so a
defense that draws its noise from the global stream draws the numbers it would draw
in-process; one with its own generator keeps it there (``reseed`` is a request).

Limits: a served classifier is differentiable once (no double backward, so no forward-mode
derivatives and no ``torch.func.vmap`` through it); a request waits at most
:data:`REQUEST_SECONDS`; bench's bound-propagation certificate does not apply to it (it cannot
see the layers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any, NoReturn

import torch
from torch import nn
from torch._C import _functorch as functorch
from torch.autograd.function import once_differentiable

from advbench._util import death, one_line, stderr_fd
from advbench.defense import Defense
from advbench.oracle import unwrapped
from advbench.running.wire import Channel, WireError, receive, send

REQUEST_SECONDS = 600.0  # one forward, backward, predict or certify request
BUILD_SECONDS = 180.0  # the process started, the plugin imported, the defense built


class ServeFailed(RuntimeError):
    """The defense raised in its model server, or the server died or broke the protocol."""


class ModelServer:
    """The harness's end of one model server: the process and its connection."""

    def __init__(self, decl: dict[str, Any], arguments: dict[str, Any], model: nn.Module
                 ) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "advbench.running.model_server", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdout=stderr_fd(), start_new_session=True)
        theirs.close()
        self.conn = Channel(ours)
        self.failed: str | None = None
        self.freed: list[int] = []  # graphs the harness dropped, told with the next request
        self._stop = weakref.finalize(self, stop, self.process, self.conn)
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        request = {"module": decl["module"], "qualname": decl["qualname"],
                   "arguments": arguments}
        try:
            blob = pickle.dumps((request, model))
        except Exception as exc:  # a model class defined in __main__, say
            self.close()
            raise ServeFailed(f"the model could not be sent to the defense's model server: "
                              f"{one_line(exc)}") from None
        header = self.exchange({"op": "build", "path": sys.path,
                                "threads": torch.get_num_threads()}, [], blob, BUILD_SECONDS)[0]
        self.identity = header.get("identity") is True
        roles = header.get("roles")
        if not isinstance(roles, dict) or "model" not in roles:
            self.fail("answered nonsense to the build request")
        self.roles: dict[str, Any] = roles

    def close(self) -> None:
        self.failed = self.failed or "was closed"
        self._stop()

    def fail(self, reason: str) -> NoReturn:
        self.failed = f"the defense's model server {reason}"
        self.close()
        raise ServeFailed(self.failed)

    def exchange(self, header: dict[str, Any], tensors: list[torch.Tensor],
                 blob: bytes | None = None, limit: float = REQUEST_SECONDS
                 ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """One request and its answer; :class:`ServeFailed` when the defense raised (the
        server stays) or the server is gone (every later request fails alike)."""
        if self.failed is not None:
            raise ServeFailed(self.failed)
        freed, self.freed = self.freed, []
        try:
            with torch._C._DisableFuncTorch():  # inside torch.func, a detach is wrapped too
                send(self.conn, {**header, "free": freed}, [unwrapped(t) for t in tensors],
                     blob)
            deadline = time.monotonic() + limit
            while not self.conn.poll(1.0):
                if self.process.poll() is not None:
                    raise EOFError
                if time.monotonic() > deadline:
                    self.fail(f"did not answer within {limit:.0f} s")
            answer, found, _ = receive(self.conn)
        except (EOFError, OSError, TimeoutError, WireError) as exc:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.fail(f"broke the protocol: {one_line(exc)}")
            self.fail(death(code))
        if answer.get("op") == "raised":
            raise ServeFailed(str(answer.get("message"))[:500])
        if answer.get("op") not in ("answer", "ready"):
            self.fail("answered nonsense")
        return answer, found

    def call(self, op: str, role: str, x: torch.Tensor, **extra: Any
             ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """``op`` on ``x``, with the harness's global random state set there and taken back."""
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states += torch.cuda.get_rng_state_all()
        header, found = self.exchange({"op": op, "role": role, **extra},
                                      [x, *states])
        if len(found) < len(states):
            self.fail("sent back no random state")
        back = found[len(found) - len(states):]
        if any(b.dtype != s.dtype or b.shape != s.shape for b, s in zip(back, states,
                                                                          strict=True)):
            self.fail("sent back a malformed random state")
        torch.set_rng_state(back[0])
        if len(back) > 1:
            torch.cuda.set_rng_state_all(back[1:])
        return header, found[: len(found) - len(states)]


def stop(process: subprocess.Popen[bytes], conn: Channel) -> None:
    conn.close()
    if process.poll() is None:
        process.kill()
    process.wait()


def checked(found: list[torch.Tensor], what: str, shapes: list[tuple[int, ...] | None],
            kinds: list[str]) -> list[torch.Tensor]:
    """``found`` if it holds tensors of these shapes (None: any 2-D of that many rows) and
    kinds (``float``, ``int``); ServeFailed naming ``what`` otherwise."""
    if len(found) != len(shapes):
        raise ServeFailed(f"the defense's {what} returned {len(found)} tensors")
    for tensor, shape, kind in zip(found, shapes, kinds, strict=True):
        floating = tensor.is_floating_point()
        if (kind == "float") != floating or (kind == "int" and tensor.dtype == torch.bool):
            raise ServeFailed(f"the defense's {what} returned {tensor.dtype} values")
        if shape is not None and tuple(tensor.shape) != shape:
            raise ServeFailed(f"the defense's {what} returned shape {tuple(tensor.shape)}, "
                              f"expected {shape}")
    return found


class Graph:
    """A forward pass kept in the model server for one backward; dropped there with it."""

    def __init__(self, server: ModelServer, key: int) -> None:
        self.server, self.key = server, key

    def __del__(self) -> None:
        self.server.freed.append(self.key)


class ServedForward(torch.autograd.Function):
    """The served classifier's forward pass, differentiable once: its backward is a request."""

    @staticmethod
    def forward(x: torch.Tensor, classifier: ServedClassifier) -> torch.Tensor:
        header, found = classifier.server.call("forward", classifier.role, x, graph=True)
        logits = classifier.logits(found, x)
        if type(header.get("id")) is not int:
            raise ServeFailed("the defense's model server answered a forward pass without "
                              "its graph")
        classifier.pending = Graph(classifier.server, header["id"])
        return logits

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, classifier = inputs
        ctx.graph = classifier.pending  # kept there too: torch.func sets up more than one ctx
        ctx.shape, ctx.dtype, ctx.device = x.shape, x.dtype, x.device

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        server = ctx.graph.server
        _, found = server.exchange({"op": "backward", "id": ctx.graph.key},
                                   [grad])
        (dx,) = checked(found, "backward", [tuple(ctx.shape)], ["float"])
        return dx.to(ctx.device, ctx.dtype), None


class ServedClassifier(nn.Module):
    """A declared defense's classifier (``role`` ``model``) or BPDA surrogate (``surrogate``),
    running in its model server. It holds no weights: one empty parameter says its device."""

    def __init__(self, server: ModelServer, role: str) -> None:
        super().__init__()
        self.server, self.role = server, role
        self.pending: Graph | None = None
        self.anchor = nn.Parameter(torch.empty(0, device=server.device), requires_grad=False)

    def logits(self, found: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        (logits,) = found
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ServeFailed(f"the defense's classifier returned shape {tuple(logits.shape)} "
                              f"for {x.shape[0]} inputs")
        checked(found, "classifier", [None], ["float"])
        return logits.to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if batched(x):
            raise ServeFailed("a served classifier cannot run under torch.func.vmap: call "
                              "the oracle once per candidate batch instead")
        if torch.is_grad_enabled() and x.requires_grad:
            out: torch.Tensor = ServedForward.apply(x, self)
            return out
        return self.logits(self.server.call("forward", self.role, x, graph=False)[1], x)


def batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is a ``torch.func.vmap`` lane (its rows are not the rows the server sees)."""
    while functorch.is_functorch_wrapped_tensor(x):
        if functorch.is_batchedtensor(x):
            return True
        x = functorch.get_unwrapped(x)
    return False


class Reseeding:
    def reseed(self: Any, seed: int) -> None:
        self.server.exchange({"op": "reseed", "role": self.role, "seed": int(seed)}, [])


class Predicting:
    def predict(self: Any, x: torch.Tensor) -> torch.Tensor:
        found = self.server.call("predict", self.role, x)[1]
        (labels,) = checked(found, "predict", [(x.shape[0],)], ["int"])
        return labels.to(x.device)


class Certifying:
    certifier: str
    certified_norm: str

    def certify(self: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = self.server.call("certify", self.role, x)[1]
        labels, radii = checked(found, "certify", [(x.shape[0],)] * 2, ["int", "float"])
        return labels, radii


MIXINS = {"reseed": Reseeding, "predict": Predicting, "certify": Certifying}
CLASSES: dict[tuple[str, ...], type[ServedClassifier]] = {}


def served(server: ModelServer, role: str) -> ServedClassifier:
    """The stand-in for the server's module ``role``, offering what that module offers
    (``reseed``, ``predict``, ``certify``: the protocols bench checks by their methods)."""
    found = server.roles[role]
    if not isinstance(found, dict):
        server.fail("answered nonsense to the build request")
    offered = tuple(sorted(name for name in MIXINS if found.get(name) is True))
    cls = CLASSES.get(offered)
    if cls is None:
        cls = CLASSES[offered] = type("ServedClassifier", (
            *(MIXINS[name] for name in offered), ServedClassifier), {})
    classifier = cls(server, role)
    if "certify" in offered:
        norm = found.get("certified_norm")
        if norm not in ("l2", "linf") or not isinstance(found.get("certifier"), str):
            server.fail("declared a certificate without its norm or name")
        classifier.certifier = found["certifier"][:100]
        classifier.certified_norm = norm
    return classifier.eval()


@contextlib.contextmanager
def served_defense(defense: Defense, model: nn.Module
                   ) -> Iterator[tuple[nn.Module, nn.Module | None]]:
    """``defense.wrap(model)`` and its ``bpda_surrogate(model)`` (None where it has none) as
    ``bench run`` serves a third party's defense: built in a model server from the defense's
    class (importable by module path) and its dataclass fields. The server stops on exit."""
    cls = type(defense)
    arguments: dict[str, Any] = ({spec.name: getattr(defense, spec.name)
                  for spec in dataclasses.fields(defense) if spec.init}
                 if dataclasses.is_dataclass(defense) else {})
    server = ModelServer({"module": cls.__module__, "qualname": cls.__qualname__}, arguments,
                         model)
    try:
        wrapped = model if server.identity else served(server, "model")
        yield wrapped, served(server, "surrogate") if "surrogate" in server.roles else None
    finally:
        server.close()
