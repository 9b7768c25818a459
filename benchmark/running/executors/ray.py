"""Run a plan's tasks on Ray (``pip install 'advbench[ray]'``): a local Ray, or a cluster.

Preparing a defended model is a task; each cell is a task that takes the first's result as an
argument, so Ray starts it once the model is ready, on any node. Each task asks for one CPU, and
one GPU when the run is on CUDA. Ray runs a task again if its worker dies (``max_retries``); a
result is recorded once, by the driver, when it arrives.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from advbench._util import one_line
from advbench.defense import Defense
from advbench.errors import BenchError, UsageError
from advbench.running.executors.base import Executor, Outcome
from advbench.running.plan import Cell
from advbench.running.worker import CellResult, Defended, Worker

try:
    import ray
except ImportError:  # pragma: no cover - depends on the environment
    ray = None  # type: ignore[assignment, unused-ignore]  # checked where one is made

RETRIES = 2  # runs of a task again after its worker died
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's address; Ray itself retries forever


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """A cluster address (``HOST:PORT`` or ``ray://HOST:PORT``) must accept a connection
    within ``timeout``: ``ray.init`` would otherwise retry forever. ``None`` and ``auto``
    are left to Ray."""
    if address in (None, "auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or "
                         "auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise UsageError(f"--ray-address {address}: no Ray cluster answers there ({reason}); "
                         "start one with 'ray start --head', or drop --ray-address to start "
                         "Ray here") from None


def _prepare(worker: Worker, defense: Defense) -> Defended:
    return worker.defended_state(defense)


def _attack(worker: Worker, cell: Cell, defense: Defense, state: Defended) -> CellResult:
    return worker.run_cell(cell, defense, state)


def root_cause(exc: BaseException) -> BaseException:
    """The exception a task raised, out of Ray's wrapper."""
    return getattr(exc, "cause", None) or exc


class RayExecutor(Executor):
    """Ray tasks; joins the Ray already initialised in this process, else ``ray.init(address)``
    (``None``: a Ray started here, on this machine, for this run)."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        if ray is None:
            raise UsageError("--executor ray needs Ray: pip install 'advbench[ray]'")
        check_reachable(address)
        self.address, self.started_here = address, False
        self.pending: list[Any] = []  # object refs of the cells not yet back

    def start(self, worker: Worker) -> None:
        super().start(worker)
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                raise BenchError(f"--executor ray: cannot start or join Ray at "
                                 f"{self.address or 'this machine'} ({one_line(exc)}); check "
                                 "--ray-address") from None
            self.started_here = True
        gpus = 1 if worker.plan.device.type == "cuda" else 0
        self.prepare_task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RETRIES)(_prepare)
        self.attack_task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RETRIES)(_attack)
        self.worker_ref = ray.put(worker)

    def prepare(self, defense: Defense) -> Any:
        return self.prepare_task.remote(self.worker_ref, defense)

    def attack(self, prepared: Any, cell: Cell, defense: Defense) -> Any:
        ref = self.attack_task.remote(self.worker_ref, cell, defense, prepared)
        self.pending.append(ref)
        return ref

    def completed(self) -> Iterator[tuple[Any, Outcome]]:
        while self.pending:
            (ref,), self.pending = ray.wait(self.pending, num_returns=1)
            try:
                yield ref, ray.get(ref)
            except Exception as exc:
                yield ref, root_cause(exc)

    def state(self, prepared: Any, defense: Defense) -> Defended:
        try:
            state = ray.get(prepared)
        except Exception as exc:
            raise root_cause(exc) from None
        return self.worker.materialize(state, defense)

    def close(self) -> None:
        if self.started_here:
            ray.shutdown()
