"""Isolated attacks: the harness side of the attack process (:mod:`.attack_process`).

The harness keeps the defended model, the evaluation data, the query tally and the gate. An
isolated attack runs in a process of its own that holds none of them; its oracle's calls are
requests the harness answers with its own :class:`advbench.oracle.Oracle` (so the seal's watch
counts them), and what it returns arrives as plain tensor data (:mod:`.wire`), which the harness
gates itself. A process that dies, hangs past ``--cell-timeout`` or runs out of memory costs its
cell an error row; the next cell gets a new process.
"""

from __future__ import annotations

import atexit
import os
import pickle
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from advbench._util import death, one_line, stderr_fd
from advbench.attack import Attack, AttackContext
from advbench.errors import UsageError
from advbench.gate import GateResult, check_adversarial
from advbench.oracle import AccessError, Oracle, QueryBudgetExceeded
from advbench.running.remote_oracle import ERRORS, PUBLIC_LOSSES
from advbench.running.wire import STALL, Channel, WireError, receive, send
from advbench.threat import ThreatModel

ISOLATION_MODES = ("auto", "all", "none")
KEPT_GRAPHS = 8  # logits graphs the harness keeps for an attack's backward requests
# The most rows one request may ask the model for: this many times the batch, and at least
# MIN_REQUEST_ROWS (candidates per sample, as pixel scans send): past it the harness's own memory
# would be the attack's to spend.
REQUEST_ROWS, MIN_REQUEST_ROWS = 64, 16384
MESSAGE_CHARS, TRACE_CHARS = 500, 100_000  # what an attack process's error may put in a row
NEEDED_NORM = "norm_before_projection"


class IsolatedFailure(RuntimeError):
    """The isolated attack failed: it raised, its process died or it ran out of time. The
    message is the cell's error; ``trace`` the attack's traceback, where there is one."""

    def __init__(self, message: str, trace: str | None = None,
                 out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.trace, self.out_of_memory = trace, out_of_memory


def isolated(mode: str, distribution: str) -> bool:
    """Whether an attack of ``distribution`` runs isolated: ``auto`` isolates every plugin not
    shipped with bench, ``all`` every attack, ``none`` none (the user vouches for the code)."""
    return mode == "all" or (mode == "auto" and distribution != "advbench")


def check_isolation(isolation: str, cell_timeout: float | None, attack_memory: float) -> None:
    """The isolation settings are usable, else a usage error naming the flag."""
    if isolation not in ISOLATION_MODES:
        raise UsageError(f"--isolation {isolation!r}: choose one of {', '.join(ISOLATION_MODES)}")
    if cell_timeout is not None and not (isinstance(cell_timeout, int | float)
                                         and cell_timeout >= 0):
        raise UsageError(f"--cell-timeout {cell_timeout!r}: give a number of seconds (0: none)")
    if not (isinstance(attack_memory, int | float) and attack_memory >= 0):
        raise UsageError(f"--attack-memory {attack_memory!r}: give GiB, or 0 for no limit")


def limit_memory(gib: float) -> Callable[[], None] | None:
    """A ``preexec_fn`` capping the attack process's address space at ``gib`` GiB (0: none)."""
    if gib <= 0:
        return None
    import resource

    size = int(gib * 2**30)
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (size, size))


@dataclass
class AttackProcess:
    """One attack process, started when first needed and replaced after it fails."""

    memory_gib: float = 8.0
    process: subprocess.Popen[bytes] | None = None
    conn: Channel | None = None
    retire: bool = False  # replace it before the next cell (an attack left threads running)

    def start(self) -> Channel:
        if self.process is not None and (self.retire or self.process.poll() is not None):
            self.close()
        if self.process is None or self.conn is None:
            ours, theirs = socket.socketpair()
            cuda = torch.cuda.is_available()  # CUDA maps far more address space than it uses
            self.process = subprocess.Popen(
                [sys.executable, "-m", "advbench.running.attack_process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdout=stderr_fd(),
                # its threads sleep while it waits for the harness, instead of spinning on the
                # cores the harness's model needs
                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
                preexec_fn=None if cuda else limit_memory(self.memory_gib),
                start_new_session=True)  # Ctrl-C interrupts the harness, which stops it
            theirs.close()
            self.conn = Channel(ours)
            send(self.conn, {"op": "setup", "path": sys.path, "threads": torch.get_num_threads()})
        return self.conn

    def close(self) -> None:
        """Stop the process (killed if it does not stop at once)."""
        if self.conn is not None:
            self.conn.deadline = None
            try:
                send(self.conn, {"op": "stop"})
            except (OSError, TimeoutError):
                pass
            self.conn.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process, self.conn, self.retire = None, None, False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
        self.close()


@dataclass
class IsolatedRunner:
    """Runs one cell's batches in ``process``: stands where ``Attack.perturb`` does in-process.
    ``timeout`` (seconds, None: none) is the cell's whole time."""

    process: AttackProcess
    device: torch.device
    torch_seed: int
    timeout: float | None = None
    started: float = field(default_factory=time.monotonic)
    sent: bool = False
    graphs: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=OrderedDict)

    def __call__(self, attack: Attack, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                 threat: ThreatModel, ctx: AttackContext) -> GateResult:
        if threat.norm not in attack.norms:
            raise ValueError(f"{attack.name} does not support the {threat.norm} threat model")
        if ctx.targets is not None and not attack.targeted:
            raise ValueError(f"{attack.name} is not a targeted attack")
        try:
            return self.run_batch(attack, oracle, x, y, threat, ctx)
        except (TimeoutError, EOFError, OSError, WireError) as exc:
            raise self.failure(exc) from None

    def failure(self, exc: BaseException) -> IsolatedFailure:
        """What went wrong with the attack process, in words; the process is gone after it."""
        process = self.process.process
        code = None if process is None else process.poll()
        if isinstance(exc, TimeoutError) and code is None:
            self.process.kill()
            if self.past_deadline():
                return IsolatedFailure(f"timeout: the attack ran past --cell-timeout "
                                       f"{self.timeout:g} s")
            return IsolatedFailure("the attack's process broke the protocol: it stalled "
                                   f"for {STALL:g} s in the middle of a message")
        if isinstance(exc, WireError | TimeoutError) or (
                type(exc) is OSError and code is None):  # a bad length, the process alive
            self.process.kill()
            return IsolatedFailure(f"the attack's process broke the protocol: {exc}")
        if process is not None and code is None:
            try:
                code = process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return IsolatedFailure("the attack's process closed its connection")
        self.process.close()
        return IsolatedFailure(f"the attack's process {death(code if code is not None else 0)}")

    def past_deadline(self) -> bool:
        return self.timeout is not None and time.monotonic() - self.started > self.timeout

    def run_batch(self, attack: Attack, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                  threat: ThreatModel, ctx: AttackContext) -> GateResult:
        conn = self.process.start()
        conn.deadline = None if self.timeout is None else self.started + self.timeout
        if not self.sent:
            try:
                blob = pickle.dumps(attack)
            except Exception as exc:
                raise IsolatedFailure(
                    f"{type(attack).__qualname__} cannot be sent to its process "
                    f"({one_line(exc)}): define it at a module's top level, or run with "
                    "--isolation none") from None
            send(conn, {"op": "attack", "device": str(self.device), "path": sys.path,
                        "torch_seed": self.torch_seed}, blob=blob)
            self.sent = True
        seed = int(ctx.generator.initial_seed())
        send(conn, {"op": "batch", "access": attack.access, "max_queries": oracle.max_queries,
                    "eot_samples": oracle.eot_samples, "norm": threat.norm, "eps": threat.eps,
                    "seed": seed}, [x, y, *([] if ctx.targets is None else [ctx.targets])])
        header, tensors = self.serve(conn, oracle)
        self.graphs.clear()
        if header.get("threads"):
            self.process.retire = True
        if header.get("needed") and tensors:
            ctx.record[NEEDED_NORM] = tensors.pop()
        if not tensors:
            return GateResult(None, f"attack returned {header.get('returned')}, "
                                    "not a torch.Tensor")
        return check_adversarial(x, tensors[0].to(x.device), threat)

    def serve(self, conn: Channel, oracle: Oracle
              ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """Answer the attack's requests until it is done; its failure raised here."""
        while True:
            header, tensors = self.next_message(conn)
            op = header.get("op")
            if op == "done":
                return header, tensors
            if op == "raised":
                # the attack process's own words: one line, bounded, for the row
                message = " ".join(str(header.get("message")).split())[:MESSAGE_CHARS]
                raise IsolatedFailure(message, str(header.get("trace"))[:TRACE_CHARS],
                                      header.get("out_of_memory") is True)
            try:
                answer = self.answer(oracle, str(op), header, tensors)
            except (AccessError, QueryBudgetExceeded, ValueError, TypeError, IndexError,
                    RuntimeError) as exc:
                name = type(exc).__name__
                send(conn, {"error": name if name in ERRORS else "RuntimeError",
                            "message": str(exc)})
                continue
            send(conn, {}, [*answer, oracle.queries])

    def next_message(self, conn: Channel) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """The attack process's next message, waiting no longer than the cell's time left."""
        process = self.process.process
        assert process is not None
        while not conn.poll(0.5):
            if process.poll() is not None:
                raise EOFError
            if self.past_deadline():
                raise TimeoutError("past the deadline")
        header, tensors, _ = receive(conn)
        return header, tensors

    def answer(self, oracle: Oracle, op: str, header: dict[str, Any],
               tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """One request, answered by the harness's oracle."""
        index = tensors.pop() if header.get("index") and tensors else None
        if op == "backward":
            return [self.backward(int(header.get("graph", -1)), tensors[0].to(self.device))]
        if op == "jvp":
            return [self.jvp(int(header.get("graph", -1)), tensors[0].to(self.device))]
        if not tensors or not tensors[0].dim():
            raise ValueError(f"malformed {op!r} request")
        limit = max(REQUEST_ROWS * len(oracle.queries), MIN_REQUEST_ROWS)
        if tensors[0].shape[0] > limit:
            raise ValueError(f"a request for {tensors[0].shape[0]} rows: the harness answers "
                             f"at most {limit} at once (split it)")
        x = tensors[0].to(self.device)
        if op == "logits":
            return self.logits(oracle, x, index, bool(header.get("keep")))
        if op == "gradient":
            loss = PUBLIC_LOSSES.get(str(header.get("loss")))
            if loss is None or len(tensors) < 2:
                raise ValueError("malformed gradient request")
            grad, logits = oracle.gradient(x, tensors[1].to(self.device), index, loss)
            return [grad, logits]
        if op == "scores":
            return [oracle.scores(x, index)]
        if op == "labels":
            return [oracle.labels(x, index)]
        raise ValueError(f"unknown request {op!r}")

    def logits(self, oracle: Oracle, x: torch.Tensor, index: torch.Tensor | None,
               keep: bool) -> list[torch.Tensor]:
        """The logits, their graph kept (under a new id) when a backward request may follow."""
        if not keep:
            with torch.no_grad():
                return [oracle.logits(x, index), torch.tensor(-1)]
        x.requires_grad_(True)
        with torch.enable_grad():
            out = oracle.logits(x, index)
        graph = next(reversed(self.graphs), -1) + 1
        self.graphs[graph] = (x, out)
        while len(self.graphs) > KEPT_GRAPHS:
            self.graphs.popitem(last=False)
        return [out.detach(), torch.tensor(graph)]

    def kept(self, graph: int) -> tuple[torch.Tensor, torch.Tensor]:
        if graph not in self.graphs:
            raise ValueError(f"the harness no longer keeps those logits: differentiate a "
                             f"loss within {KEPT_GRAPHS} oracle calls of its logits")
        return self.graphs[graph]

    def jvp(self, graph: int, tangents: torch.Tensor) -> torch.Tensor:
        """The logits' derivative along each of ``tangents`` (``[k, *x.shape]``), by the
        double-backward trick: J t is the gradient in u of ⟨Jᵀu, t⟩."""
        x, out = self.kept(graph)
        if tangents.shape[1:] != x.shape:
            raise ValueError(f"tangents of shape {tuple(tangents.shape)} for inputs of shape "
                             f"{tuple(x.shape)}")
        if not out.requires_grad:
            return torch.zeros(len(tangents), *out.shape, dtype=out.dtype, device=out.device)
        u = torch.zeros_like(out, requires_grad=True)
        with torch.enable_grad():
            (vjp,) = torch.autograd.grad(out, x, u, create_graph=True)
        return torch.stack([torch.autograd.grad(vjp, u, t.to(vjp.dtype), retain_graph=True,
                                                allow_unused=True, materialize_grads=True)[0]
                            for t in tangents])

    def backward(self, graph: int, grad_logits: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to the input of ⟨logits, ``grad_logits``⟩."""
        x, out = self.kept(graph)
        if grad_logits.shape != out.shape:
            raise ValueError(f"gradient of shape {tuple(grad_logits.shape)} for logits of "
                             f"shape {tuple(out.shape)}")
        if not out.requires_grad:  # logits that ignore x: a zero gradient
            return torch.zeros_like(x)
        return torch.autograd.grad(out, x, grad_logits.to(out.dtype), retain_graph=True,
                                   allow_unused=True, materialize_grads=True)[0]


_shared: list[AttackProcess] = []


def run_isolated(attack: Attack, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                 threat: ThreatModel, ctx: AttackContext) -> GateResult:
    """One batch of ``attack`` in an attack process, as a run's isolated cell runs it, gated
    by this process: what ``Attack.perturb`` gives in-process. The process is shared by every
    call of this Python process (started on first use, stopped at exit); the attack process's
    global RNG is seeded with this process's ``torch.initial_seed()``. Raises
    :class:`IsolatedFailure` where the attack raised, its process died or it broke the
    protocol. The conformance kit's ``isolated`` rule runs through it."""
    if not _shared:
        _shared.append(AttackProcess())
        atexit.register(_shared[0].close)
    runner = IsolatedRunner(_shared[0], x.device, torch.initial_seed())
    return runner(attack, oracle, x, y, threat, ctx)
