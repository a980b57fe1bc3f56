"""Standalone programs (e.g. a HumanEval completion plus its tests) run on the shared pool."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from w4s.sandbox import worker as _w
from w4s.sandbox.pool import WorkerDied, shared_pool
from w4s.sandbox.types import ProgramResult, SandboxSettings

_GRACE_S = 10.0  # the zygote enforces the timeout; this only guards against a stuck zygote
_MAX_BATCH = 8
_dispatch: ThreadPoolExecutor | None = None
_dispatch_lock = threading.Lock()


def _dispatcher() -> ThreadPoolExecutor:
    global _dispatch
    with _dispatch_lock:
        if _dispatch is None:
            _dispatch = ThreadPoolExecutor(shared_pool().size, thread_name_prefix="w4s-program")
        return _dispatch


def run_program(
    source: str, *, timeout_s: float = 5.0, settings: SandboxSettings | None = None
) -> ProgramResult:
    """Run one program in a jailed process; usable from any thread."""
    return _run_batch([source], timeout_s=timeout_s, settings=settings)[0]


def run_programs(
    sources: Sequence[str], *, timeout_s: float = 5.0, settings: SandboxSettings | None = None
) -> list[ProgramResult]:
    """Run programs in parallel on the warm shared pool; results in input order.

    Programs travel to the workers in small batches (one round trip per batch, one jailed
    fork per program), so a loaded machine's scheduling delays are paid per batch.
    """
    if len(sources) <= 1:
        return [run_program(s, timeout_s=timeout_s, settings=settings) for s in sources]
    size = max(1, min(_MAX_BATCH, math.ceil(len(sources) / (4 * shared_pool().size))))
    batches = [list(sources[i: i + size]) for i in range(0, len(sources), size)]
    futures = [_dispatcher().submit(_run_batch, b, timeout_s=timeout_s, settings=settings)
               for b in batches]
    return [r for f in futures for r in f.result()]


def _run_batch(
    sources: list[str], *, timeout_s: float, settings: SandboxSettings | None
) -> list[ProgramResult]:
    settings = settings or SandboxSettings()
    if not timeout_s > 0:
        raise ValueError(f"`timeout_s` must be positive, but received {timeout_s!r}")
    start = time.monotonic()
    pool = shared_pool()
    deadline_s = len(sources) * (timeout_s + 1.0) + _GRACE_S
    for attempt in range(2):  # a worker that died between jobs is replaced once
        try:
            with pool.worker() as w:
                try:
                    _w.send_frame(w.ctrl, {
                        "op": "programs", "job": 0, "sources": sources, "timeout_s": timeout_s,
                        "memory_mb": settings.memory_mb, "limit": settings.max_output_chars,
                    })
                    reply = _w.recv_frame(w.ctrl, deadline=time.monotonic() + deadline_s)
                    records = reply["results"]
                    if not isinstance(records, list) or len(records) != len(sources):
                        raise _w.ProtocolError("wrong number of program results")
                except (TimeoutError, EOFError, OSError, KeyError, _w.ProtocolError) as e:
                    w.kill()
                    raise WorkerDied(f"{type(e).__name__} {e}".strip()) from e
        except WorkerDied as e:
            if attempt == 1:
                failed = ProgramResult(False, f"sandbox worker failed: {e}", "",
                                       time.monotonic() - start)
                return [failed] * len(sources)
            continue
        return [_result(rec) for rec in records]
    raise AssertionError("unreachable")


def _result(rec: dict) -> ProgramResult:
    ok = bool(rec.get("ok"))
    return ProgramResult(
        ok=ok, error=None if ok else str(rec.get("error") or "program failed"),
        stdout=str(rec.get("stdout", "")), seconds=float(rec.get("seconds", 0.0)),
    )
