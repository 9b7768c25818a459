"""The attack process: ``python -m advbench.running.attack_process FD`` runs an isolated attack.

It holds no model, no evaluation data beyond the batch it is sent, no tally and no gate: it
builds the attack it is sent, runs ``run`` on each batch with a :class:`RemoteOracle`, and sends
back what the attack returned as plain tensor data, for the harness to gate. Whatever the attack
does here (monkeypatching, ``gc``, threads, ``sys.exit``) stays here.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

import torch

from advbench._util import one_line
from advbench.attack import Attack, AttackContext
from advbench.gate import plain_tensor
from advbench.plugin_system.declared import DeclaredAttack
from advbench.running.remote_oracle import RemoteOracle
from advbench.running.wire import DTYPES, receive, send
from advbench.threat import ThreatModel

NEEDED_NORM = "norm_before_projection"


def run_batch(conn: Connection, attack: Attack, header: dict[str, Any],
              tensors: list[torch.Tensor], device: torch.device) -> None:
    """Run the attack on one batch and send the harness what it returned (or how it failed)."""
    x, y, *rest = (t.to(device) for t in tensors)
    oracle = RemoteOracle(conn, header["access"], len(x), header["max_queries"],
                          header["eot_samples"], device)
    ctx = AttackContext(torch.Generator(device=device).manual_seed(header["seed"]),
                        rest[0] if rest else None)
    threat = ThreatModel(header["norm"], header["eps"])
    try:
        x_adv = attack.run(oracle, x.clone(), y.clone(), threat, ctx)  # type: ignore[arg-type]
    except SystemExit as exc:
        send(conn, {"op": "raised", "message": f"attack called sys.exit({exc.code!r})",
                    "trace": "".join(traceback.format_exception(exc))})
        return
    except BaseException as exc:  # KeyboardInterrupt too: Ctrl-C reaches the harness only
        send(conn, {"op": "raised", "message": f"attack raised {one_line(exc)}",
                    "out_of_memory": out_of_memory(exc),
                    "trace": "".join(traceback.format_exception(exc))})
        return
    try:
        send_result(conn, x_adv, ctx.record.get(NEEDED_NORM), len(x))
    except Exception as exc:
        send(conn, {"op": "raised", "message": f"the attack's output could not be sent: "
                    f"{one_line(exc)}", "trace": "".join(traceback.format_exception(exc))})


def out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError or the CPU allocator's failure: the harness retries the cell
    with smaller batches, as in-process."""
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def send_result(conn: Connection, x_adv: object, needed: object, n: int) -> None:
    """What the attack returned, as plain tensor data (a tensor subclass's data, read with its
    ``__torch_function__`` off), and the per-sample norms it reported, if it reported them."""
    x_adv, needed = plain_tensor(x_adv), plain_tensor(needed)
    returned = type(x_adv).__name__
    tensors = []
    if isinstance(x_adv, torch.Tensor):
        if str(x_adv.dtype).removeprefix("torch.") in DTYPES:
            tensors.append(x_adv.detach())
        else:
            returned = f"a tensor of dtype {x_adv.dtype}"
    reports = isinstance(needed, torch.Tensor) and needed.shape == (n,)
    if isinstance(needed, torch.Tensor) and reports:
        tensors.append(needed.detach().float())
    send(conn, {"op": "done", "returned": returned, "needed": reports,
                "threads": threading.active_count() - 1}, tensors)


def serve(conn: Connection) -> None:
    """Answer the harness until it says stop or goes away."""
    attack: Attack | None = None
    failed = "no attack was sent"
    device = torch.device("cpu")
    while True:
        try:
            header, tensors, blob = receive(conn, trust_blob=True)
        except EOFError:
            return
        op = header.get("op")
        if op == "stop":
            return
        if op == "setup":
            sys.path[:] = header["path"]
            torch.set_num_threads(header["threads"])
        elif op == "attack":
            sys.path[:] = header["path"]  # the harness's, as it is now
            importlib.invalidate_caches()
            device = torch.device(header["device"])
            torch.manual_seed(header["torch_seed"])
            try:
                attack = pickle.loads(blob or b"")
                if isinstance(attack, DeclaredAttack):  # read by the catalog: the real class
                    attack = attack.real()
            except BaseException as exc:  # an import that fails or exits
                attack, failed = None, f"building the attack in its process failed: {one_line(exc)}"
        elif op == "batch":
            if attack is None:
                send(conn, {"op": "raised", "message": failed, "trace": ""})
            else:
                run_batch(conn, attack, header, tensors, device)


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
        sys.stdout.flush()
        os._exit(0)  # threads an attack left behind do not keep the process alive


if __name__ == "__main__":
    main()
