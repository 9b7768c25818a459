"""A declared defense's ``fit``, run in a training process of its own (#29).

The harness sends the training process (:mod:`.training_process`) the defense's module, class and
arguments, the run's untrained model (pickled: the harness trusts what it sends), the training
data and the training context; the process builds the real defense, runs its ``fit`` and sends
back the trained weights as plain tensors, with the training curves as JSON. The harness never
unpickles what the process sends: it checks that the weights are its model's, name for name,
shape for shape and dtype for dtype, and loads them into its own copy of the model. So a
defense's code, from its import to its last training step, never runs in the harness.
"""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advbench._util import death, one_line, stderr_fd
from advbench.data import Split
from advbench.running.wire import Channel, WireError, receive, send

MAX_TICKS = 1 << 20  # batches one progress message may report


class TrainingFailed(RuntimeError):
    """The defense's fit raised in its process, or the process died or broke the protocol."""


def fit_remotely(decl: dict[str, Any], arguments: dict[str, Any], model: nn.Module,
                 train: Split, ctx: dict[str, Any], on_batch: Callable[[], None]
                 ) -> dict[str, Any] | None:
    """Train ``model`` in place with the declared defense's real ``fit`` in a training process;
    the training curves it kept (plain JSON), if any. :class:`TrainingFailed` otherwise."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "advbench.running.training_process", str(theirs.fileno())],
        pass_fds=[theirs.fileno()], stdout=stderr_fd(), start_new_session=True)
    theirs.close()
    conn = Channel(ours)
    try:
        request = {"module": decl["module"], "qualname": decl["qualname"],
                   "arguments": arguments, "ctx": ctx}
        try:
            blob = pickle.dumps((request, model))
        except Exception as exc:  # a model class defined in __main__, say
            raise TrainingFailed(f"the model could not be sent to the defense's training "
                                 f"process: {one_line(exc)}") from None
        # the global random state as the harness has it, so that a fit drawing from it
        # (dropout, say) trains the model it would train in-process
        states = [torch.get_rng_state(), *(torch.cuda.get_rng_state_all()
                                           if torch.cuda.is_available() else [])]
        send(conn, {"op": "fit", "path": sys.path, "threads": torch.get_num_threads()},
             [train.x, train.y, *states], blob=blob)
        return answers(conn, process, model, on_batch)
    except (EOFError, OSError, TimeoutError, WireError) as exc:
        code = process.poll()
        if code is None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                raise TrainingFailed(f"the defense's training process broke the protocol: "
                                     f"{one_line(exc)}") from None
        raise TrainingFailed(f"the defense's training process {death(code)}") from None
    finally:
        conn.close()
        if process.poll() is None:
            process.kill()
        process.wait()


def answers(conn: Channel, process: subprocess.Popen[bytes], model: nn.Module,
            on_batch: Callable[[], None]) -> dict[str, Any] | None:
    """Follow the training process: its progress, then its weights (loaded into ``model``)
    and curves, or its failure."""
    while True:
        while not conn.poll(1.0):  # training may run for hours between two messages
            if process.poll() is not None:
                raise EOFError
        header, tensors, _ = receive(conn)
        op = header.get("op")
        if op == "tick" and type(header.get("n")) is int:
            for _ in range(min(header["n"], MAX_TICKS)):
                on_batch()
        elif op == "raised" and isinstance(header.get("message"), str):
            raise TrainingFailed(header["message"][:500])
        elif op == "done":
            load_weights(model, header.get("names"), tensors)
            history = header.get("history")
            if history is not None and not isinstance(history, dict):
                raise TrainingFailed("the defense's history is not a mapping")
            return history
        else:
            raise WireError(f"unexpected message {str(op)[:40]!r}")


def load_weights(model: nn.Module, names: object, tensors: list[torch.Tensor]) -> None:
    """The trained weights into ``model``, if they are its own: the same names, shapes and
    dtypes (a ``fit`` that returned another architecture fails here, as its cached weights
    would fail to load)."""
    own = model.state_dict()
    if not isinstance(names, list) or names != list(own) or len(tensors) != len(own):
        raise TrainingFailed("fit returned a model whose weights are not the run's model's "
                             "(other parameter names)")
    for name, tensor in zip(names, tensors, strict=True):
        if tensor.shape != own[name].shape or tensor.dtype != own[name].dtype:
            raise TrainingFailed(f"fit returned {name} of shape {tuple(tensor.shape)} "
                                 f"{tensor.dtype}, the run's model has "
                                 f"{tuple(own[name].shape)} {own[name].dtype}")
    model.load_state_dict(dict(zip(names, tensors, strict=True)))
