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
from multiprocessing.connection import Connection
from typing import Any

import torch

# Tensors may cross in these dtypes only (the harness's own dtypes, and index/label/mask ones).
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool)}
MAX_HEADER = 1 << 20  # bytes
MAX_TENSOR = 1 << 34  # bytes: 16 GiB, above any batch a benchmark would send


class WireError(RuntimeError):
    """A message that does not follow the protocol (from a broken or hostile attack process)."""


def send(conn: Connection, header: dict[str, Any], tensors: list[torch.Tensor] = (),  # type: ignore[assignment]
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


def receive(conn: Connection, *, trust_blob: bool = False
            ) -> tuple[dict[str, Any], list[torch.Tensor], bytes | None]:
    """One message: its header, its tensors (plain ``torch.Tensor``, on the CPU) and its blob,
    still pickled (accepted only with ``trust_blob``: the attack process's side). Raises
    :class:`WireError` on anything malformed, ``EOFError`` when the other side is gone."""
    try:
        header = json.loads(conn.recv_bytes(MAX_HEADER))
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


def receive_tensor(conn: Connection, spec: object) -> torch.Tensor:
    """One tensor announced by ``spec`` (``[dtype, shape]``), checked, copied out of the bytes."""
    if (not isinstance(spec, list) or len(spec) != 2 or spec[0] not in DTYPES
            or not isinstance(spec[1], list)
            or not all(type(n) is int and n >= 0 for n in spec[1])):
        raise WireError(f"malformed tensor description {spec!r}")
    dtype, shape = DTYPES[spec[0]], spec[1]
    size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if size > MAX_TENSOR:
        raise WireError(f"tensor of {size} bytes refused")
    data = conn.recv_bytes(max(size, 1))
    if len(data) != size:
        raise WireError(f"tensor of {len(data)} bytes, expected {size}")
    if not size:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
