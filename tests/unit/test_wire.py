"""The wire between the harness and an attack process (#29): tensors cross as a JSON header and
raw bytes, come back equal and as plain ``torch.Tensor``; whatever malformed thing the attack side
sends raises :class:`WireError` (never unpickled, never a tensor subclass)."""

from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import pytest
import torch

from advbench.running.wire import DTYPES, MAX_HEADER, Channel, WireError, receive, send


@pytest.fixture(params=["pipe", "channel"])
def pipe(request):
    """Two ends: ``ours`` reads as the harness does, ``theirs`` writes as an attack process
    could. "pipe": two ``multiprocessing`` connections; "channel": the harness's own end
    (:class:`Channel`, bounded waits) facing the attack process's ``Connection``."""
    if request.param == "pipe":
        ours, theirs = Pipe()
    else:
        a, b = socket.socketpair()
        ours, theirs = Channel(a), Connection(b.detach())
    yield ours, theirs
    ours.close()
    theirs.close()


def patterned(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Values that differ across the tensor, in ``dtype`` (bits of a float tensor included)."""
    values = torch.arange(int(torch.tensor(shape).prod()) if shape else 1)
    if dtype == torch.bool:
        return (values % 3 == 0).reshape(shape)
    if dtype.is_floating_point:
        return ((values.double() - 3.25) / 7).to(dtype).reshape(shape)
    return (values % 100 - 50).to(dtype).reshape(shape) if dtype != torch.uint8 else (
        values % 256).to(dtype).reshape(shape)


@pytest.mark.parametrize("dtype", sorted(DTYPES.values(), key=str))
def test_every_dtype_round_trips_bit_for_bit(pipe, dtype):
    ours, theirs = pipe
    tensors = [patterned(dtype, (2, 3, 4)), patterned(dtype, ()), patterned(dtype, (5,))]
    send(theirs, {"op": "x", "n": 3}, tensors)
    header, got, blob = receive(ours)
    assert header == {"op": "x", "n": 3} and blob is None
    for sent, back in zip(tensors, got, strict=True):
        assert type(back) is torch.Tensor and back.dtype == dtype and back.shape == sent.shape
        assert back.is_contiguous() and back.device.type == "cpu"
        assert torch.equal(back.view(-1).view(torch.uint8) if back.dim() else back,
                           sent.reshape(-1).view(torch.uint8) if sent.dim() else sent)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0, 2), (3, 0)])
def test_empty_tensors_keep_their_shape(pipe, shape):
    ours, theirs = pipe
    send(theirs, {}, [torch.empty(shape), torch.ones(2)])
    _, (empty, after), _ = receive(ours)
    assert empty.shape == shape and empty.dtype == torch.float32
    assert torch.equal(after, torch.ones(2))  # the next tensor is not shifted


def test_non_contiguous_and_subclass_tensors_arrive_as_plain_data(pipe):
    ours, theirs = pipe

    class Sub(torch.Tensor):
        pass

    base = torch.arange(24.0).reshape(4, 6)
    send(theirs, {}, [base.t(), base[:, ::2], base.as_subclass(Sub)])
    _, (t, strided, sub), _ = receive(ours)
    assert torch.equal(t, base.t()) and torch.equal(strided, base[:, ::2])
    assert type(sub) is torch.Tensor and torch.equal(sub, base)


def test_no_tensors_and_a_blob_for_the_trusting_side(pipe):
    ours, theirs = pipe
    send(ours, {"op": "attack"}, blob=pickle.dumps({"a": 1}))  # the harness's way
    header, tensors, blob = receive(theirs, trust_blob=True)
    assert header == {"op": "attack"} and tensors == [] and pickle.loads(blob) == {"a": 1}


def test_a_pickle_sent_to_the_harness_side_is_refused(pipe):
    ours, theirs = pipe
    send(theirs, {"op": "done"}, [torch.ones(2)], blob=pickle.dumps(object()))
    with pytest.raises(WireError, match="pickle"):
        receive(ours)


def raw(conn, header: object, *messages: bytes) -> None:
    """What a hostile attack process could write: a header of its choosing, then messages."""
    conn.send_bytes(header if isinstance(header, bytes) else json.dumps(header).encode())
    for message in messages:
        conn.send_bytes(message)


def raw_or_nothing(conn, header: bytes) -> None:
    """:func:`raw` from a thread, whose peer may close before it is done."""
    try:
        raw(conn, header)
    except OSError:
        pass


@pytest.mark.parametrize("header", [
    b"not json at all", b"\xff\xfe\x00binary", b"{\"tensors\": [", b"[1, 2, 3]", b"\"tensors\"",
    b"{\"op\": \"done\"}", b"{\"tensors\": {\"a\": 1}}", b"null"])
def test_a_header_that_is_not_a_json_object_with_tensors_is_refused(pipe, header):
    ours, theirs = pipe
    raw(theirs, header)
    with pytest.raises(WireError, match="malformed message header"):
        receive(ours)


@pytest.mark.parametrize("spec", [
    ["complex64", [2]], ["object", [1]], ["torch.float32", [2]], ["float32", [-1]],
    ["float32", [2, -3]], ["float32", [2.0]], ["float32", [True]], ["float32", "2"],
    ["float32"], ["float32", [2], "extra"], "float32", None, ["float32", [1 << 40, 1 << 40]]])
def test_a_malformed_tensor_description_is_refused(pipe, spec):
    ours, theirs = pipe
    raw(theirs, {"tensors": [spec], "blob": False}, b"\x00" * 8)
    with pytest.raises(WireError):
        receive(ours)


def test_fewer_bytes_than_the_shape_says_are_refused(pipe):
    ours, theirs = pipe
    raw(theirs, {"tensors": [["float32", [4]]], "blob": False}, b"\x00" * 12)
    with pytest.raises(WireError, match="12 bytes, expected 16"):
        receive(ours)


def test_more_bytes_than_the_shape_says_are_refused(pipe):
    """A longer message than announced raises WireError too, not the connection's OSError
    (which the harness reads as a dead process, and waits for it)."""
    ours, theirs = pipe
    raw(theirs, {"tensors": [["float32", [4]]], "blob": False}, b"\x00" * 20)
    with pytest.raises(WireError):
        receive(ours)


def test_a_header_longer_than_the_limit_is_refused(pipe):
    """Refused as WireError, not the connection's OSError (see the test above)."""
    ours, theirs = pipe
    big = json.dumps({"tensors": [], "pad": "x" * MAX_HEADER}).encode()
    # a writer thread: the socket holds less than the header, and nobody reads what is refused
    writer = threading.Thread(target=raw_or_nothing, args=(theirs, big), daemon=True)
    writer.start()
    with pytest.raises(WireError):
        receive(ours)
    ours.close()  # the writer's pipe breaks: it ends before the fixture closes its end
    writer.join()


def test_an_empty_tensor_announced_with_bytes_is_refused(pipe):
    ours, theirs = pipe
    raw(theirs, {"tensors": [["int64", [0, 5]]], "blob": False}, b"\x01")
    with pytest.raises(WireError):
        receive(ours)


def test_the_other_side_gone_is_eof(pipe):
    ours, theirs = pipe
    raw(theirs, {"tensors": [["float32", [4]]], "blob": False})  # its tensor never comes
    theirs.close()
    with pytest.raises(EOFError):
        receive(ours)


@pytest.fixture
def channel():
    a, b = socket.socketpair()
    ours, theirs = Channel(a), Connection(b.detach())
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_message_begun_and_never_finished_times_out_at_the_deadline(channel):
    """Half a header, then nothing: the harness's end gives up at its deadline (TimeoutError),
    where a ``Connection`` would wait for ever."""
    ours, theirs = channel
    theirs._send((100).to_bytes(4, "big") + b'{"op": "d')  # the framing, by hand
    ours.deadline = time.monotonic() + 0.3
    with pytest.raises(TimeoutError):
        receive(ours)


def test_a_tensor_never_sent_times_out_at_the_deadline(channel):
    ours, theirs = channel
    raw(theirs, {"tensors": [["float32", [4]]], "blob": False})
    ours.deadline = time.monotonic() + 0.3
    with pytest.raises(TimeoutError):
        receive(ours)


def test_past_the_deadline_nothing_is_read(channel):
    ours, theirs = channel
    send(theirs, {"op": "done"})
    ours.deadline = time.monotonic() - 1
    with pytest.raises(TimeoutError):
        receive(ours)
    ours.deadline = None  # the message is still there, whole
    assert receive(ours)[0] == {"op": "done"}


def test_a_large_message_crosses_in_both_directions(channel):
    """Tensors above a socket's buffer, each way (a writer thread: the reader is this one)."""
    ours, theirs = channel
    big = torch.randn(3, 1 << 20)
    writer = threading.Thread(target=send, args=(theirs, {}, [big]))
    writer.start()
    (back,) = receive(ours)[1]
    writer.join()
    assert torch.equal(back, big)
    writer = threading.Thread(target=send, args=(ours, {}, [big * 2]))
    writer.start()
    (back,) = receive(theirs, trust_blob=True)[1]
    writer.join()
    assert torch.equal(back, big * 2)
