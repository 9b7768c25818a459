"""The training process: ``python -m advbench.running.training_process FD`` fits a defense.

It gets one request from the harness (:mod:`.remote_training`): the defense's module, class and
arguments, the untrained model, the training data and the context. It builds the real defense,
runs its ``fit`` (reporting progress as it goes) and sends back the trained weights as plain
tensors and the training curves as JSON. Whatever the defense does here stays here.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import traceback
from multiprocessing.connection import Connection

import torch

from advbench._util import one_line
from advbench.data import Split
from advbench.defense import Defense
from advbench.plugin_system.declared import context_from_json, rebuild
from advbench.running.wire import receive, send


class Ticker:
    """``ctx.on_batch``: counts batches and tells the harness at most five times a second."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.pending, self.last = conn, 0, time.monotonic()

    def __call__(self) -> None:
        self.pending += 1
        if time.monotonic() - self.last > 0.2:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            send(self.conn, {"op": "tick", "n": self.pending})
        self.pending, self.last = 0, time.monotonic()


def train(conn: Connection) -> None:
    header, tensors, blob = receive(conn, trust_blob=True)
    sys.path[:] = header["path"]  # before unpickling: the model's class is imported by name
    torch.set_num_threads(header["threads"])
    request, model = pickle.loads(blob or b"")
    defense = rebuild(request["module"], request["qualname"], request["arguments"])
    if not isinstance(defense, Defense):
        raise TypeError(f"{request['qualname']} is not a Defense")
    ticker = Ticker(conn)
    ctx = context_from_json(request["ctx"], on_batch=ticker)
    x, y, cpu_state, *cuda_states = tensors
    torch.set_rng_state(cpu_state)
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    trained = defense.fit(model.to(ctx.device), Split(x, y), ctx)
    state = trained.state_dict()
    kept = defense.history
    history = None if kept is None else json.loads(json.dumps(kept.to_dict(), default=repr))
    ticker.flush()
    send(conn, {"op": "done", "names": list(state), "history": history},
         [tensor.detach() for tensor in state.values()])


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    try:
        train(conn)
    except BaseException as exc:  # SystemExit too: the harness learns why, then the row does
        try:
            send(conn, {"op": "raised", "message": f"fit raised {one_line(exc)}",
                        "trace": "".join(traceback.format_exception(exc))[-4000:]})
        except OSError:
            pass
    finally:
        conn.close()
        sys.stdout.flush()
        os._exit(0)  # threads the defense started do not keep the process alive


if __name__ == "__main__":
    main()
