"""Standalone programs (e.g. a HumanEval completion plus its tests) run on the shared pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from w4s.sandbox import worker as _w
from w4s.sandbox.pool import WorkerDied, shared_pool
from w4s.sandbox.types import ProgramResult, SandboxSettings

_GRACE_S = 10.0  # the zygote enforces the timeout; this only guards against a stuck zygote
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
    settings = settings or SandboxSettings()
    if not timeout_s > 0:
        raise ValueError(f"`timeout_s` must be positive, but received {timeout_s!r}")
    start = time.monotonic()
    pool = shared_pool()
    for attempt in range(2):  # a worker that died between jobs is replaced once
        try:
            with pool.worker() as w:
                try:
                    _w.send_frame(w.ctrl, {
                        "op": "program", "job": 0, "source": source, "timeout_s": timeout_s,
                        "memory_mb": settings.memory_mb, "limit": settings.max_output_chars,
                    })
                    rec = _w.recv_frame(w.ctrl, deadline=time.monotonic() + timeout_s + _GRACE_S)
                except (TimeoutError, EOFError, OSError, _w.ProtocolError) as e:
                    w.kill()
                    raise WorkerDied(f"{type(e).__name__} {e}".strip()) from e
        except WorkerDied as e:
            if attempt == 1:
                return ProgramResult(False, f"sandbox worker failed: {e}", "",
                                     time.monotonic() - start)
            continue
        ok = bool(rec.get("ok"))
        return ProgramResult(
            ok=ok, error=None if ok else str(rec.get("error") or "program failed"),
            stdout=str(rec.get("stdout", "")), seconds=float(rec.get("seconds", 0.0)),
        )
    raise AssertionError("unreachable")


def run_programs(
    sources: Sequence[str], *, timeout_s: float = 5.0, settings: SandboxSettings | None = None
) -> list[ProgramResult]:
    """Run programs in parallel on the warm shared pool; results in input order."""
    if not sources:
        return []
    if len(sources) == 1:
        return [run_program(sources[0], timeout_s=timeout_s, settings=settings)]
    futures = [_dispatcher().submit(run_program, s, timeout_s=timeout_s, settings=settings)
               for s in sources]
    return [f.result() for f in futures]
