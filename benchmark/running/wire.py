"""Messages between the harness and an attack process: a JSON header, then each tensor's raw bytes.

What the attack process sends is never unpickled: the harness reads a JSON header, checks each
tensor's dtype, shape and length, and copies the bytes into a plain ``torch.Tensor`` of its own.
Nothing the attack process sends can make the harness run code, or hand it a tensor subclass.
The harness's messages to the attack process may carry one pickle (the attack to build): that
side trusts the harness.
"""

from __future__ import annotations

import json
import math
import select
import socket
import struct
import time
from typing import Any, Protocol

import torch

# Tensors may cross in these dtypes only (the harness's own dtypes, and index/label/mask ones).
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool)}
MAX_HEADER = 1 << 20  # bytes
MAX_TENSOR = 1 << 34  # bytes: 16 GiB, above any batch a benchmark would send


STALL = 30.0  # seconds a message already begun may pause before the harness gives up on it


class WireError(RuntimeError):
    """A message that does not follow the protocol (from a broken or hostile attack process)."""


class Link(Protocol):
    """Either end of the connection: ``multiprocessing.connection.Connection`` (the attack
    process's) or :class:`Channel` (the harness's), which frame messages alike."""

    def send_bytes(self, buf: Any) -> None: ...

    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...

    def poll(self, timeout: float | None = 0.0) -> bool: ...


class Channel:
    """The harness's end: ``Connection``'s framing (a 4-byte big-endian length, or −1 and an
    8-byte one, then the bytes) over a socket whose every wait is bounded, so that an attack
    process that stops mid-message, or stops reading, cannot hang the harness: a message may
    stall at most :data:`STALL` seconds, and none may run past ``deadline`` (monotonic seconds;
    None: no deadline). Either raises ``TimeoutError``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline: float | None = None

    def _wait(self) -> float:
        left = STALL if self.deadline is None else min(STALL, self.deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError("past the deadline")
        return left

    def send_bytes(self, buf: Any) -> None:
        data = memoryview(buf).cast("B")
        head = (struct.pack("!i", len(data)) if len(data) <= 0x7FFFFFFF
                else struct.pack("!iQ", -1, len(data)))
        for part in (head, data):
            view = memoryview(part)
            while view.nbytes:
                self.sock.settimeout(self._wait())
                view = view[self.sock.send(view):]

    def _exact(self, n: int) -> bytes:
        out = bytearray(n)
        view, got = memoryview(out), 0
        while got < n:
            self.sock.settimeout(self._wait())
            read = self.sock.recv_into(view[got:])
            if not read:
                raise EOFError
            got += read
        return bytes(out)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        (size,) = struct.unpack("!i", self._exact(4))
        if size == -1:
            (size,) = struct.unpack("!Q", self._exact(8))
        if size < 0 or (maxlength is not None and size > maxlength):
            raise WireError(f"a message of {size} bytes, longer than the protocol allows")
        return self._exact(size)

    def poll(self, timeout: float | None = 0.0) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def close(self) -> None:
        self.sock.close()


def send(conn: Link, header: dict[str, Any], tensors: list[torch.Tensor] = (),  # type: ignore[assignment]
         blob: bytes | None = None) -> None:
    """Send ``header`` (JSON-able), then each tensor's bytes (from the CPU), then ``blob`` (a
    pickle: harness to attack process only)."""
    plain = [t.detach().to("cpu").contiguous() for t in tensors]
    header = {**header, "tensors": [[str(t.dtype).removeprefix("torch."), list(t.shape)]
                                     for t in plain], "blob": blob is not None}
    conn.send_bytes(json.dumps(header).encode())
    for t in plain:
        conn.send_bytes(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    if blob is not None:
        conn.send_bytes(blob)


def receive(conn: Link, *, trust_blob: bool = False
            ) -> tuple[dict[str, Any], list[torch.Tensor], bytes | None]:
    """One message: its header, its tensors (plain ``torch.Tensor``, on the CPU) and its blob,
    still pickled (accepted only with ``trust_blob``: the attack process's side). Raises
    :class:`WireError` on anything malformed, ``EOFError`` when the other side is gone."""
    try:
        header = json.loads(bounded(conn, MAX_HEADER))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"malformed message header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise WireError("malformed message header")
    tensors = [receive_tensor(conn, spec) for spec in header.pop("tensors")]
    blob = None
    if header.pop("blob", False):
        data = conn.recv_bytes()
        if not trust_blob:
            raise WireError("the attack process sent a pickle: refused")
        blob = data
    return header, tensors, blob


def bounded(conn: Link, limit: int) -> bytes:
    """The next message, refused (:class:`WireError`) when longer than ``limit`` bytes."""
    try:
        return conn.recv_bytes(limit)
    except OSError as exc:
        if "bad message length" in str(exc):  # Connection's word for it
            raise WireError(f"a message longer than the {limit} bytes announced") from None
        raise


def receive_tensor(conn: Link, spec: object) -> torch.Tensor:
    """One tensor announced by ``spec`` (``[dtype, shape]``), checked, copied out of the bytes."""
    if (not isinstance(spec, list) or len(spec) != 2 or spec[0] not in DTYPES
            or not isinstance(spec[1], list)
            or not all(type(n) is int and n >= 0 for n in spec[1])):
        raise WireError(f"malformed tensor description {spec!r}")
    dtype, shape = DTYPES[spec[0]], spec[1]
    size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if size > MAX_TENSOR:
        raise WireError(f"tensor of {size} bytes refused")
    data = bounded(conn, max(size, 1))
    if len(data) != size:
        raise WireError(f"tensor of {len(data)} bytes, expected {size}")
    if not size:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
