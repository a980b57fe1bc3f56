"""Frames between the parent and the worker: a 4-byte big-endian length, then UTF-8 JSON.

The peer may be hostile (a jailed job writes to the data socket), so a frame is bounded
before it is buffered, and anything that is not one of our frames is a ProtocolError.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time

HEADER = struct.Struct(">I")
MAX_FRAME = 8 * 1024 * 1024  # a bigger frame from the child is a protocol error, not a buffer


class ProtocolError(Exception):
    """The peer sent something that is not a frame of ours (oversized, truncated, not JSON)."""


def send_frame(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    """Send one frame; `fds` (unix sockets only) travel with its first byte."""
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    data = HEADER.pack(len(data)) + data
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
    data = _recv_exact(sock, size, deadline)
    try:
        obj = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"frame is not JSON: {type(e).__name__}: {e}"[:300]) from e
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    return obj
