"""Standalone programs, and code tests (an answer against its official tests), run on the
shared pool.

A code test runs in two processes that share nothing but a socket: the answer alone in a
jailed solution process (S) forked by a worker's zygote, the official tests in a test
process (T) forked by a test server this module starts (it never runs an answer). Values
cross as plain data, and only T's verdict, on a pipe S never holds, decides a pass; see
`worker.solution`, `worker.tester` and docs/sandbox.md ("Scoring integrity").
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from w4s.sandbox import worker as _w
from w4s.sandbox.pool import WORKER_MAIN, WorkerDied, shared_pool, worker_env
from w4s.sandbox.types import ProgramResult, SandboxSettings

_GRACE_S = 10.0  # the zygote enforces the timeout; this only guards against a stuck zygote
_MAX_BATCH = 8
_MAX_TEST_BATCH = 16  # one test process per batch runs its tests side by side
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


@dataclass(frozen=True)
class CodeTest:
    """An answer and the official tests that judge it.

    solution: the answer's code, the only text S runs (HumanEval: prompt + completion).
    setup: trusted text T runs first (HumanEval: the prompt, for helpers such as `poly`;
    MBPP: test imports and setup code). test: trusted text defining `check`, called as
    `check(candidate)` (check_arg) or `check()`; the entry point and any other name the
    test uses that only the solution defines are proxies to S.
    """

    solution: str
    test: str
    entry_point: str
    setup: str = ""
    check_arg: bool = True


def run_tests(
    tests: Sequence[CodeTest], *, timeout_s: float = 5.0, settings: SandboxSettings | None = None
) -> list[ProgramResult]:
    """Judge answers against their tests in parallel on the warm pool; results in order.

    ok: the official `check` ran to its end on values the solution computed. A timeout
    bounds each answer's calls (from when its code has run), and the whole batch.
    """
    if not tests:
        return []
    size = max(1, min(_MAX_TEST_BATCH, math.ceil(len(tests) / (4 * shared_pool().size))))
    batches = [list(tests[i: i + size]) for i in range(0, len(tests), size)]
    if len(batches) == 1:
        return _test_batch(batches[0], timeout_s=timeout_s, settings=settings)
    futures = [_dispatcher().submit(_test_batch, b, timeout_s=timeout_s, settings=settings)
               for b in batches]
    return [r for f in futures for r in f.result()]


class _TestServer:
    """The process that forks T: trusted code only, started here, outside every jail."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        cfg = json.dumps({"role": "tester", "fd": theirs.fileno()})
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-B", WORKER_MAIN, cfg], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=worker_env(), cwd="/", start_new_session=True)
        finally:
            theirs.close()
        self.sock = mine
        self.lock = threading.Lock()

    def start(self, batch: dict, fds: list[int]) -> int:
        """Fork the T of a batch holding `fds` (S's peer per test, the verdict pipe)."""
        with self.lock:
            _w.send_frame(self.sock, batch)
            socket.send_fds(self.sock, [b"F"], fds)
            reply = _w.recv_frame(self.sock, deadline=time.monotonic() + 30.0)
        if not reply.get("pid"):
            raise OSError(f"test server: {reply.get('error', 'no pid')}")
        return int(reply["pid"])

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


_server: _TestServer | None = None
_server_lock = threading.Lock()


def _test_server() -> _TestServer:
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None or _server.sock.fileno() < 0:
            if _server is not None:
                _server.close()
            else:
                atexit.register(lambda: _server and _server.close())
            _server = _TestServer()
        return _server


def _test_batch(
    tests: list[CodeTest], *, timeout_s: float, settings: SandboxSettings | None
) -> list[ProgramResult]:
    settings = settings or SandboxSettings()
    if not timeout_s > 0:
        raise ValueError(f"`timeout_s` must be positive, but received {timeout_s!r}")
    start = time.monotonic()
    deadline_s = len(tests) * (timeout_s + 1.0) + _GRACE_S
    for attempt in range(2):  # a worker that died between jobs is replaced once
        try:
            return _test_attempt(tests, timeout_s, settings, start + deadline_s, start)
        except WorkerDied as e:
            if attempt == 1:
                failed = ProgramResult(False, f"sandbox worker failed: {e}", "",
                                       time.monotonic() - start)
                return [failed] * len(tests)
    raise AssertionError("unreachable")


def _test_attempt(tests: list[CodeTest], timeout_s: float, settings: SandboxSettings,
                  deadline: float, start: float) -> list[ProgramResult]:
    server = _test_server()
    pairs = [socket.socketpair() for _ in tests]
    verdict_r, verdict_w = os.pipe()
    pidfd = -1
    verdicts: dict[int, dict] = {}
    try:
        with shared_pool().worker() as wk:
            try:  # the S's first: their code runs while the test server forks T
                _w.send_frame(wk.ctrl, {
                    "op": "solutions", "job": 0, "sources": [t.solution for t in tests],
                    "timeout_s": timeout_s, "wall_s": max(0.0, deadline - time.monotonic()),
                    "memory_mb": settings.memory_mb, "limit": settings.max_output_chars})
                socket.send_fds(wk.ctrl, [b"F"], [s.fileno() for s, _ in pairs])
            except OSError as e:
                wk.kill()
                raise WorkerDied(f"{type(e).__name__} {e}".strip()) from e
            for s_end, _ in pairs:
                s_end.close()  # the zygote holds them now: S sees EOF once T is done
            batch = {"tests": [asdict(t) for t in tests], "timeout_s": timeout_s,
                     "ready_s": max(0.0, deadline - time.monotonic()),
                     "memory_mb": settings.memory_mb}
            try:
                pid = server.start(batch, [t.fileno() for _, t in pairs] + [verdict_w])
            except (TimeoutError, EOFError, OSError, _w.ProtocolError) as e:
                server.close()  # started afresh on the retry
                wk.kill()  # its S's wait for a T that will never come
                raise WorkerDied(f"test server: {type(e).__name__} {e}".strip()) from e
            with contextlib.suppress(OSError, AttributeError):  # T is not our child
                pidfd = os.pidfd_open(pid)  # signals then reach T, never a reused pid
            for _, t_end in pairs:
                t_end.close()
            os.close(verdict_w)
            verdict_w = -1
            try:
                reply = _w.recv_frame(wk.ctrl, deadline=deadline)
                sides = reply["results"]
                if not isinstance(sides, list) or len(sides) != len(tests):
                    raise _w.ProtocolError("wrong number of solution results")
            except (TimeoutError, EOFError, OSError, KeyError, _w.ProtocolError) as e:
                wk.kill()
                raise WorkerDied(f"{type(e).__name__} {e}".strip()) from e
        verdicts = _read_verdicts(verdict_r, len(tests), deadline)
    finally:
        for s_end, t_end in pairs:
            s_end.close()
            t_end.close()
        os.close(verdict_r)
        if verdict_w >= 0:
            os.close(verdict_w)
        if pidfd >= 0:
            if len(verdicts) < len(tests):  # T stuck: its own alarm would end it later
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
    seconds = time.monotonic() - start
    return [_verdict(verdicts.get(i), side, timeout_s, seconds)
            for i, side in enumerate(sides)]


def _read_verdicts(fd: int, n: int, deadline: float) -> dict[int, dict]:
    """T's verdict lines by test index, read until EOF, n lines or `deadline`."""
    data = b""
    while data.count(b"\n") < n and len(data) < n * 8192:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    out: dict[int, dict] = {}
    for line in data.splitlines():
        try:
            verdict = json.loads(line)
        except ValueError:
            continue
        if isinstance(verdict, dict) and isinstance(verdict.get("i"), int):
            out.setdefault(verdict["i"], verdict)
    return out


def _verdict(verdict: dict | None, side: dict, timeout_s: float,
             seconds: float) -> ProgramResult:
    if verdict is not None and verdict.get("ok") is True:
        return ProgramResult(True, None, "", seconds)
    if verdict is not None and "error" in verdict:
        error = str(verdict["error"])
    elif isinstance(side, dict) and side.get("timed_out"):
        error = f"timeout after {timeout_s:g}s"
    else:
        error = "the tests did not finish"
    return ProgramResult(False, error, "", seconds)


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
