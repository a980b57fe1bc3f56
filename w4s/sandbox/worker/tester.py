"""The test side of code scoring: a fork server whose children (T) run the official tests.

T execs only trusted text (the benchmark's setup, e.g. a HumanEval prompt with its helpers,
and its `check`), with the solution's functions bound to proxies that call the solution
process (S) over a socket and rebuild each reply as plain data (`plain`). S's code never
runs here, so nothing it does (an always-equal object, a frame walk to a pass marker, an
early exit, a trace function, a patched builtin) can reach T's asserts or its verdict,
which T writes to a pipe that only the parent holds. This server and T never drop to the
jobs' uid, are not dumpable (no ptrace, no /proc/<pid>/mem) and live outside the workers'
PID namespace; the server is started by the parent and never holds a solution.

Started as `python -s -B .../worker/__main__.py '{"role": "tester", "fd": N}'`.
"""

from __future__ import annotations

import builtins
import json
import os
import resource
import signal
import socket
import time
from typing import Any

from .framing import ProtocolError, recv_frame, send_frame
from .libc import get_libc
from .plain import NotPlain, decode, encode
from .text import clip

PR_SET_DUMPABLE = 4
VERDICT_LIMIT = 2000
_SAFE_EXCEPTIONS = {name: obj for name, obj in vars(builtins).items()
                    if isinstance(obj, type) and issubclass(obj, Exception)}


class SolutionError(Exception):
    """The solution raised something that is not a builtin exception, or went away."""


class _Proxy:
    """Stands for one function (or class) of the solution inside the test process."""

    def __init__(self, conn: _Conn, name: str) -> None:
        self._conn, self._name = conn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.call(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<solution function {self._name}>"


class _Conn:
    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        self.sock, self.max_frame = sock, max_frame

    def ready(self, deadline: float) -> list[str]:
        try:
            hello = recv_frame(self.sock, deadline=deadline, max_bytes=self.max_frame)
        except TimeoutError:
            raise SolutionError("solution process did not start in time") from None
        except (EOFError, OSError, ProtocolError) as e:
            raise SolutionError(f"solution process ended before its code ran ({e})") from None
        if hello.get("op") != "ready":
            raise SolutionError("solution process sent no ready message")
        if "error" in hello:
            raise SolutionError(f"the solution's code failed: {str(hello['error'])[-800:]}")
        names = hello.get("names")
        return [n for n in names if type(n) is str] if type(names) is list else []

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        try:
            req = {"name": name, "args": [encode(a) for a in args],
                   "kwargs": {str(k): encode(v) for k, v in kwargs.items()}}
        except NotPlain as e:
            raise TypeError(f"test argument cannot be sent to the solution: {e}") from None
        try:
            send_frame(self.sock, req)
            reply = recv_frame(self.sock, max_bytes=self.max_frame)
        except (EOFError, OSError, ProtocolError) as e:
            raise SolutionError(f"solution process ended during {name}() ({e})") from None
        if "raise" in reply:
            kind = str(reply["raise"])
            exc = _SAFE_EXCEPTIONS.get(kind, SolutionError)
            raise exc(f"{kind} in solution: {str(reply.get('message', ''))[:500]}")
        try:
            value = decode(reply["value"])
            after = reply.get("args") or []
            for original, state in zip(args, after if type(after) is list else [], strict=False):
                if state is not None and type(original) in (list, dict, set):
                    _update(original, decode(state))
        except (KeyError, NotPlain, RecursionError) as e:
            raise SolutionError(f"{name}() returned no plain value: {e}") from None
        return value


def _update(original: Any, state: Any) -> None:
    """Apply an argument's state after the call, as if the solution mutated it here."""
    if type(state) is not type(original):
        return
    if type(original) is list:
        original[:] = state
    else:
        original.clear()
        original.update(state)


def _referenced_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _referenced_names(const)
    return names


def run_checks(sock: socket.socket, spec: dict, *, timeout_s: float, ready_s: float,
               max_frame: int) -> dict:
    """Exec the trusted setup and test, bind the solution's names to proxies, run `check`."""
    conn = _Conn(sock, max_frame)
    entry = str(spec["entry_point"])
    glb: dict = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(spec.get("setup") or "", "<setup>", "exec"), glb)  # noqa: S102 - trusted
    test_code = compile(spec["test"], "<tests>", "exec")
    try:
        offered = conn.ready(time.monotonic() + ready_s)
    except SolutionError as e:
        return {"ok": False, "error": clip(str(e), VERDICT_LIMIT)}
    signal.setitimer(signal.ITIMER_REAL, timeout_s)  # SIGALRM's default action ends T
    glb[entry] = _Proxy(conn, entry)
    wanted = _referenced_names(test_code) - set(glb) - set(vars(builtins))
    for name in wanted & set(offered):  # e.g. a class the tests build, as MBPP's `Pair`
        glb[name] = _Proxy(conn, name)
    exec(test_code, glb)  # noqa: S102 - trusted: defines `check`
    try:
        if spec.get("check_arg", True):
            glb["check"](glb[entry])
        else:
            glb["check"]()
    except BaseException as e:  # noqa: BLE001 - a failed assert, or the solution's error
        line = f"{type(e).__name__}: {e}".rstrip(": ") if str(e) else type(e).__name__
        return {"ok": False, "error": clip(line, VERDICT_LIMIT)}
    return {"ok": True}


def _child(conn_fd: int, verdict_fd: int, req: dict) -> None:
    """T: limits, then the tests; the verdict goes to the parent's pipe, nowhere else."""
    code = 1
    try:
        get_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        memory_mb = int(req.get("memory_mb") or 0)
        if memory_mb > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        cpu = int(float(req["timeout_s"]) + float(req["ready_s"])) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        sock = socket.socket(fileno=conn_fd)
        try:
            verdict = run_checks(sock, req["spec"], timeout_s=float(req["timeout_s"]),
                                 ready_s=float(req["ready_s"]),
                                 max_frame=int(req.get("max_frame") or 8 << 20))
        except BaseException as e:  # noqa: BLE001 - broken setup/test text: not a pass
            verdict = {"ok": False, "error": clip(f"test harness: {type(e).__name__}: {e}",
                                                  VERDICT_LIMIT)}
        signal.setitimer(signal.ITIMER_REAL, 0)
        sock.close()  # S sees EOF and exits
        os.write(verdict_fd, json.dumps(verdict).encode()[:4000])
        code = 0
    finally:
        os._exit(code)


def serve(sock: socket.socket) -> None:
    """One request per test: a frame, then the two descriptors (S's peer, the verdict pipe)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            req = recv_frame(sock)
            _, fds, _, _ = socket.recv_fds(sock, 1, 2)
        except (EOFError, OSError, ProtocolError):
            return
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            send_frame(sock, {"error": "expected two descriptors"})
            continue
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(fds[0], fds[1], req)
        for fd in fds:
            os.close(fd)
        send_frame(sock, {"pid": pid})


def main(cfg: dict) -> None:
    import gc

    from .zygote import WARM_MODULES

    get_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    for name in WARM_MODULES:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.collect()
    gc.freeze()
    serve(socket.socket(fileno=int(cfg["fd"])))
