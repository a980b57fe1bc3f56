"""Frames between the parent and the worker: a 4-byte big-endian length, then UTF-8 JSON.

The peer may be hostile (a jailed job writes to the data socket), so a frame is bounded
before it is buffered, and anything that is not one of our frames is a ProtocolError.
"""

from __future__ import annotations

import json
import math
import select
import socket
import struct
import time

HEADER = struct.Struct(">I")
MAX_FRAME = 8 * 1024 * 1024  # a bigger frame from the child is a protocol error, not a buffer


class ProtocolError(Exception):
    """The peer sent something that is not a frame of ours (oversized, truncated, not JSON)."""


def send_frame(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    """Send one frame; `fds` (unix sockets only) travel with its first byte."""
    data = _encode(obj)
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        data = data[sent:]
    if data:
        sock.sendall(data)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _recv_exact(sock: socket.socket, n: int, deadline: float | None,
                fds: list[int] | None = None) -> bytes:
    """`n` bytes; with `fds`, the descriptors passed along with the first chunk land there."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        if fds is not None and not buf:
            chunk, got, _, _ = socket.recv_fds(sock, n, 4)
            fds.extend(got)
        else:
            chunk = sock.recv(min(n - len(buf), 1 << 20))  # socket.timeout is a TimeoutError
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} is not finite")
    return value


def recv_frame(
    sock: socket.socket, *, deadline: float | None = None, max_bytes: int = MAX_FRAME,
    fds: list[int] | None = None,
) -> dict:
    """Read one frame; TimeoutError past `deadline`, EOFError on a closed peer.

    Strict JSON only: NaN/Infinity (also an overflowing literal such as 1e400) and nesting
    deep enough to exhaust the decoder's recursion are ProtocolErrors (a frame's numbers
    must survive int() and float()).
    """
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size, deadline, fds))
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    return _parse(_recv_exact(sock, size, deadline))


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _parse(data: bytes) -> dict:
    try:
        obj = _DECODER.decode(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"frame is not JSON: {type(e).__name__}: {e}"[:300]) from e
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    return obj


def _encode(obj: dict) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    return HEADER.pack(len(data)) + data


class FrameChannel:
    """One end of a strictly request-reply socket (a code test's T and S), framed as by
    `send_frame`/`recv_frame`: each call costs a round trip, so frames are read through a
    buffer (one recv a frame, where `recv_frame` makes two, each after a timeout change)
    and, with deadlines (`timed`), waited for by poll on a non-blocking socket."""

    def __init__(self, sock: socket.socket, *, max_bytes: int = MAX_FRAME,
                 timed: bool = False) -> None:
        self.sock, self.max_bytes, self.timed = sock, max_bytes, timed
        self._buf = bytearray()
        sock.setblocking(not timed)
        self._readable = select.poll() if timed else None
        if self._readable is not None:
            self._readable.register(sock, select.POLLIN)

    def _wait(self, poller: select.poll, deadline: float | None) -> None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError
        if not poller.poll(None if left is None else max(1, math.ceil(left * 1000))):
            raise TimeoutError

    def send(self, obj: dict, deadline: float | None = None) -> None:
        data = memoryview(_encode(obj))
        if not self.timed:
            self.sock.sendall(data)
            return
        while data:
            try:
                data = data[self.sock.send(data):]
            except BlockingIOError:
                writable = select.poll()
                writable.register(self.sock, select.POLLOUT)
                self._wait(writable, deadline)

    def recv(self, deadline: float | None = None) -> dict:
        """The next frame; TimeoutError past `deadline`, EOFError on a closed peer."""
        buf, need = self._buf, HEADER.size
        while True:
            if len(buf) >= HEADER.size:
                (size,) = HEADER.unpack_from(buf)
                if size > self.max_bytes:
                    raise ProtocolError(
                        f"frame of {size} bytes exceeds the {self.max_bytes}-byte limit")
                need = HEADER.size + size
                if len(buf) >= need:
                    data = bytes(buf[HEADER.size:need])
                    del buf[:need]
                    return _parse(data)
            if self._readable is not None:
                self._wait(self._readable, deadline)
            try:
                chunk = self.sock.recv(max(1 << 16, min(need - len(buf), 1 << 20)))
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError
            buf += chunk
