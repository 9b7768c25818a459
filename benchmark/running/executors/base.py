"""Where the tasks of a run execute: in the driver's process, in a pool of processes, on Ray.

A run has two kinds of task: preparing a defended model (train or load it, predict, certify)
and attacking it in one cell, which depends on the first. An :class:`Executor` takes them and
hands back each cell's result as it finishes; the driver (``advbench.running.driver``) alone records
results and writes the run folder, so resume and the results files work the same everywhere.

Internal, like the rest of ``advbench.running``: not a plugin extension point, free to change
in any release. A new backend (Dask, Slurm, ...) is added here, in bench itself, as a subclass
implementing the six methods below and a name in ``get_executor``; ``docs/scaling.md`` says how.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from advbench.defense import Defense
from advbench.running.plan import Cell, check_limit
from advbench.running.worker import CellResult, Defended, Worker

Outcome = CellResult | BaseException  # an exception: the cell's task, or its defense's, failed


class Executor:
    """Runs a plan's tasks. ``prepare`` and ``attack`` return opaque handles; ``completed``
    yields ``(handle, result)`` for every cell submitted, as each finishes."""

    name: ClassVar[str]

    def start(self, worker: Worker) -> None:
        """Get ready to run ``worker``'s tasks (the driver keeps its own copy)."""
        self.worker = worker

    def prepare(self, defense: Defense) -> Any:
        """Submit the preparation of a defended model; returns its handle."""
        raise NotImplementedError

    def attack(self, prepared: Any, cell: Cell, defense: Defense) -> Any:
        """Submit a cell, to run once ``prepared`` is done; returns its handle. May be called
        while ``completed`` is being iterated (a cascade submits a chain's next cell when the
        one before it comes back), ``prepared`` done or not."""
        raise NotImplementedError

    def completed(self) -> Iterator[tuple[Any, Outcome]]:
        """Every submitted cell's result (or the exception that stopped it), as each finishes."""
        raise NotImplementedError

    def state(self, prepared: Any, defense: Defense) -> Defended:
        """A prepared defended model, in the driver, with its model (call after one of its
        cells completed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers."""


@dataclass
class _Lazy:
    """A defended state computed on first use (or the exception computing it raised)."""

    defense: Defense
    value: Defended | None = None
    error: BaseException | None = None


class LocalExecutor(Executor):
    """Everything in the driver's process, in plan order: training, then its cells."""

    name = "local"

    def __init__(self) -> None:
        self.queue: list[tuple[int, _Lazy, Cell, Defense]] = []

    def prepare(self, defense: Defense) -> _Lazy:
        return _Lazy(defense)

    def attack(self, prepared: _Lazy, cell: Cell, defense: Defense) -> int:
        self.queue.append((len(self.queue), prepared, cell, defense))
        return len(self.queue) - 1

    def completed(self) -> Iterator[tuple[int, Outcome]]:
        for handle, prepared, cell, defense in self.queue:
            try:
                yield handle, self.worker.run_cell(cell, defense, self._get(prepared))
            except Exception as exc:
                yield handle, exc
        self.queue = []

    def _get(self, prepared: _Lazy) -> Defended:
        if prepared.value is None and prepared.error is None:
            try:
                prepared.value = self.worker.defended_state(prepared.defense)
            except Exception as exc:
                prepared.error = exc
        if prepared.error is not None:
            raise prepared.error
        assert prepared.value is not None
        return prepared.value

    def state(self, prepared: _Lazy, defense: Defense) -> Defended:
        return self._get(prepared)


_WORKER: Worker  # the worker of a pool process, set by _start_process


def _start_process(worker: Worker, threads: int, driver: int) -> None:
    global _WORKER
    _WORKER = worker
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_driver, args=(driver,), daemon=True).start()


def _exit_with_driver(driver: int) -> None:
    """A pool process outlives a killed driver, training on for nobody: end it too."""
    while os.getppid() == driver:
        time.sleep(1.0)
    os._exit(1)


def _prepare_in_process(defense: Defense) -> Defended:
    return _WORKER.defended_state(defense)


def _attack_in_process(cell: Cell, defense: Defense, state: Defended) -> CellResult:
    return _WORKER.run_cell(cell, defense, state)


@dataclass
class _Task:
    """A task of the pool, kept to submit it again if its process dies."""

    kind: str  # "prepare" or "attack"
    args: tuple
    handle: int
    tries: int = 0
    waiting: list[int] = field(default_factory=list)  # prepare: cells waiting for it


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes on this machine, each with ``threads`` torch
    threads (default: an equal share of the cores). A process that dies takes its tasks with
    it: they are submitted again (twice at most) to a fresh pool; a result is recorded once,
    when it reaches the driver."""

    name = "processes"
    max_tries = 3

    def __init__(self, workers: int, threads: int | None = None) -> None:
        check_limit("workers", workers)
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.pool: ProcessPoolExecutor | None = None
        self.tasks: dict[int, _Task] = {}
        self.running: dict[Future, int] = {}
        self.prepared: dict[int, Defended | BaseException] = {}
        self.queued = 0
        self.failed: list[tuple[int, BaseException]] = []  # cells whose defense failed before

    def start(self, worker: Worker) -> None:
        super().start(worker)
        self._new_pool()

    def _new_pool(self) -> None:
        self.pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process, initargs=(self.worker, self.threads, os.getpid()))

    def _submit(self, task: _Task) -> None:
        task.tries += 1
        function = _prepare_in_process if task.kind == "prepare" else _attack_in_process
        assert self.pool is not None, "start() makes the pool"
        self.running[self.pool.submit(function, *task.args)] = task.handle

    def _new_task(self, kind: str, args: tuple) -> int:
        handle = self.queued
        self.queued += 1
        self.tasks[handle] = _Task(kind, args, handle)
        return handle

    def prepare(self, defense: Defense) -> int:
        handle = self._new_task("prepare", (defense,))
        self._submit(self.tasks[handle])
        return handle

    def attack(self, prepared: int, cell: Cell, defense: Defense) -> int:
        handle = self._new_task("attack", (cell, defense))
        if prepared not in self.prepared:
            self.tasks[prepared].waiting.append(handle)
        elif isinstance(state := self.prepared[prepared], BaseException):
            self.failed.append((handle, state))
        else:
            self.tasks[handle].args = (cell, defense, state)
            self._submit(self.tasks[handle])
        return handle

    def completed(self) -> Iterator[tuple[int, Outcome]]:
        while self.running or self.failed:
            if self.failed:
                yield self.failed.pop(0)
                continue
            done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
            lost = []
            for future in done:
                task = self.tasks[self.running.pop(future)]
                try:
                    value = future.result()
                except BrokenProcessPool:
                    lost.append(task)
                    continue
                except Exception as exc:
                    value = exc
                yield from self._finished(task, value)
            if lost:
                yield from self._restart(lost)

    def _finished(self, task: _Task, value: Any) -> Iterator[tuple[int, Outcome]]:
        if task.kind == "attack":
            yield task.handle, value
            return
        self.prepared[task.handle] = value
        for handle in task.waiting:
            cell_task = self.tasks[handle]
            if isinstance(value, BaseException):
                yield handle, value
            else:
                cell_task.args = (*cell_task.args[:2], value)
                self._submit(cell_task)

    def _restart(self, lost: list[_Task]) -> Iterator[tuple[int, Outcome]]:
        """A dead process breaks the whole pool: what it was running goes to a new pool,
        except a task that has already been tried ``max_tries`` times, which fails."""
        assert self.pool is not None, "start() makes the pool"
        self.pool.shutdown(wait=False, cancel_futures=True)
        lost += [self.tasks[handle] for handle in self.running.values()]
        self.running = {}
        self._new_pool()
        for task in lost:
            if task.tries < self.max_tries:
                self._submit(task)
            else:
                failure = RuntimeError(f"a worker process died {task.tries} times running "
                                       "this task")
                yield from self._finished(task, failure)

    def state(self, prepared: int, defense: Defense) -> Defended:
        value = self.prepared[prepared]
        if isinstance(value, BaseException):
            raise value
        return self.worker.materialize(value, defense)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

