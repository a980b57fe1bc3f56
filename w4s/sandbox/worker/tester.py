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
import collections
import importlib
import json
import os
import resource
import signal
import socket
import sys
import threading
import time
from typing import Any

from .framing import FrameChannel, ProtocolError, recv_frame, send_frame
from .libc import get_libc
from .plain import NotPlain, decode, encode
from .text import clip

PR_SET_DUMPABLE = 4
VERDICT_LIMIT = 2000
_SAFE_EXCEPTIONS = {name: obj for name, obj in vars(builtins).items()
                    if isinstance(obj, type) and issubclass(obj, Exception)}


class SolutionError(BaseException):
    """The solution went away, timed out or sent no plain value. A BaseException, so that a
    test's `except Exception` cannot swallow it, as it could not swallow an exit."""


class _Proxy:
    """Stands for one function (or class) of the solution inside the test process."""

    def __init__(self, conn: _Conn, name: str) -> None:
        self._conn, self._name = conn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.call(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<solution function {self._name}>"


class _Conn:
    """T's side of the socket to one S. Once broken (S gone, late, or not plain), it stays
    broken and the test fails, whatever the test code does with the exception."""

    def __init__(self, sock: socket.socket, max_frame: int, timeout_s: float) -> None:
        self.chan = FrameChannel(sock, max_bytes=max_frame, timed=True)
        self.timeout_s = timeout_s
        self.deadline = 0.0
        self.broken: str | None = None

    def _fail(self, why: str) -> SolutionError:
        self.broken = self.broken or why
        return SolutionError(self.broken)

    def ready(self, deadline: float) -> tuple[list[str], dict[str, str]]:
        try:
            hello = self.chan.recv(deadline)
        except TimeoutError:
            raise self._fail("solution process did not start in time") from None
        except (EOFError, OSError, ProtocolError) as e:
            raise self._fail(f"solution process ended before its code ran ({e})") from None
        if hello.get("op") != "ready":
            raise self._fail("solution process sent no ready message")
        if "error" in hello:
            raise self._fail(f"the solution's code failed: {str(hello['error'])[-800:]}")
        self.deadline = time.monotonic() + self.timeout_s  # the test's clock starts now
        names, modules = hello.get("names"), hello.get("modules")
        names = [n for n in names if type(n) is str] if type(names) is list else []
        modules = {k: v for k, v in modules.items() if type(v) is str} if type(modules) is \
            dict else {}
        return names, modules

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if self.broken:
            raise SolutionError(self.broken)
        try:
            req = {"name": name, "args": [encode(a) for a in args],
                   "kwargs": {str(k): encode(v) for k, v in kwargs.items()}}
        except NotPlain as e:
            raise TypeError(f"test argument cannot be sent to the solution: {e}") from None
        try:
            self.chan.send(req, self.deadline)
            reply = self.chan.recv(self.deadline)
        except TimeoutError:
            raise self._fail(f"timeout after {self.timeout_s:g}s") from None
        except (EOFError, OSError, ProtocolError) as e:
            raise self._fail(f"solution process ended during {name}() ({e})") from None
        if "raise" in reply:
            kind = str(reply["raise"])
            exc = _SAFE_EXCEPTIONS.get(kind)
            message = f"{kind} in solution: {str(reply.get('message', ''))[:500]}"
            if exc is None:  # SystemExit, KeyboardInterrupt, a class of its own...
                raise self._fail(message)
            raise exc(message)
        try:
            value = decode(reply["value"])
            after = reply.get("args") or []
            for original, state in zip(args, after if type(after) is list else [],
                                       strict=False):
                if state is not None and type(original) in (list, dict, set):
                    _update(original, decode(state))
        except (KeyError, NotPlain, RecursionError) as e:
            raise self._fail(f"{name}() returned no plain value: {e}") from None
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


def _plain_stdlib(module: str) -> bool:
    """A standard-library module T may import itself (MBPP tests use `sys`, `math`... that
    only the solution imported); never one with side effects on import."""
    top = module.partition(".")[0]
    return top in getattr(sys, "stdlib_module_names", ()) and top not in _NOISY


_NOISY = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "webbrowser",
          "pydoc", "ensurepip", "venv", "__main__", "site"}


def _referenced_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _referenced_names(const)
    return names


# compiled setup and test texts, kept by the test server: the same items are scored for
# every candidate, and compiling them was about half of T's CPU
_Compiled = tuple  # (code or the compile error, names the code refers to)
CACHE_CHARS = 4_000_000  # of source text kept compiled (least recently used go first)


def _compile(text: str, filename: str) -> _Compiled:
    try:
        code = compile(text, filename, "exec")
    except Exception as e:  # noqa: BLE001 - raised in T, as if T had compiled it
        return e, frozenset()
    return code, frozenset(_referenced_names(code))


class _CodeCache:
    def __init__(self, max_chars: int) -> None:
        self.max_chars, self.chars = max_chars, 0
        self.entries: collections.OrderedDict[tuple[str, str], _Compiled] = \
            collections.OrderedDict()

    def get(self, text: str, filename: str) -> _Compiled:
        key = (text, filename)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        value = _compile(text, filename)
        if len(text) <= self.max_chars:
            self.entries[key] = value
            self.chars += len(text)
            while self.chars > self.max_chars:
                (old, _), _ = self.entries.popitem(last=False)
                self.chars -= len(old)
        return value


_cache = _CodeCache(CACHE_CHARS)


def compile_spec(spec: dict) -> tuple[_Compiled, _Compiled]:
    """The setup and test of a spec compiled (trusted text only: the server never holds an
    answer), from the cache when seen before."""
    out = []
    for key, filename in (("setup", "<setup>"), ("test", "<tests>")):
        text = spec.get(key) or ""
        out.append(_cache.get(text, filename) if isinstance(text, str) else
                   (TypeError(f"{key} is not text"), frozenset()))
    return out[0], out[1]


def _code(compiled: _Compiled):
    code, _ = compiled
    if isinstance(code, BaseException):
        raise code
    return code


def run_checks(sock: socket.socket, spec: dict, *, timeout_s: float, ready_by: float,
               max_frame: int, compiled: tuple[_Compiled, _Compiled] | None = None) -> dict:
    """Exec the trusted setup and test, bind the solution's names to proxies, run `check`.
    A pass: `check` returned, and every call got a plain value in time.
    `compiled`: `compile_spec(spec)`, done by the server before it forked this T."""
    conn = _Conn(sock, max_frame, timeout_s)
    entry = str(spec["entry_point"])
    setup, test = compiled or compile_spec(spec)
    glb: dict = {"__name__": "__main__", "__builtins__": builtins}
    exec(_code(setup), glb)  # noqa: S102 - trusted
    test_code = _code(test)
    try:
        offered, modules = conn.ready(ready_by)
        glb[entry] = _Proxy(conn, entry)
        wanted = test[1] - set(glb) - set(vars(builtins))
        for name in wanted & set(offered):  # e.g. a class the tests build, as MBPP's `Pair`
            glb[name] = _Proxy(conn, name)
        for name in wanted & set(modules):  # a module the tests use but only S imported
            if _plain_stdlib(modules[name]):
                glb[name] = importlib.import_module(modules[name])
        exec(test_code, glb)  # noqa: S102 - trusted: defines `check`
        if spec.get("check_arg", True):
            glb["check"](glb[entry])
        else:
            glb["check"]()
    except BaseException as e:  # noqa: BLE001 - a failed assert, or the solution's error
        if conn.broken:
            return {"ok": False, "error": clip(conn.broken, VERDICT_LIMIT)}
        line = f"{type(e).__name__}: {e}".rstrip(": ") if str(e) else type(e).__name__
        return {"ok": False, "error": clip(line, VERDICT_LIMIT)}
    if conn.broken:
        return {"ok": False, "error": clip(conn.broken, VERDICT_LIMIT)}
    return {"ok": True}


def _child(conns: list[int], verdict_fd: int, batch: dict, compiled: list) -> None:
    """T: one per batch, a thread per test (each S is forked already and waits), writing
    one verdict line per test to the parent's pipe, nowhere else."""
    code = 1
    try:
        get_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        memory_mb = int(batch.get("memory_mb") or 0)
        if memory_mb > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        timeout_s, ready_s = float(batch["timeout_s"]), float(batch["ready_s"])
        signal.setitimer(signal.ITIMER_REAL, ready_s + 5.0)  # a backstop for the whole batch
        ready_by = time.monotonic() + ready_s
        max_frame = int(batch.get("max_frame") or 8 << 20)

        def one(i: int, fd: int, spec: dict, code: tuple) -> None:
            sock = socket.socket(fileno=fd)
            try:
                verdict = run_checks(sock, spec, timeout_s=timeout_s, ready_by=ready_by,
                                     max_frame=max_frame, compiled=code)
            except BaseException as e:  # noqa: BLE001 - broken setup/test text: no pass
                verdict = {"ok": False, "error": clip(f"test harness: {type(e).__name__}: "
                                                      f"{e}", VERDICT_LIMIT)}
            sock.close()  # S sees EOF and is done
            verdict["i"] = i
            # one short line per write: atomic on a pipe, whatever the other threads do
            os.write(verdict_fd, json.dumps(verdict).encode()[:4000] + b"\n")

        # the tests of a batch run side by side: each mostly waits on its own S
        threads = [threading.Thread(target=one, args=(i, fd, spec, code), daemon=True)
                   for i, (fd, spec, code) in enumerate(zip(conns, batch["tests"], compiled,
                                                            strict=True))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        code = 0
    finally:
        os._exit(code)


def _compiled_or_none(spec: dict) -> tuple | None:
    """In the server: a spec it cannot read is T's to fail on (a verdict, not a crash)."""
    try:
        return compile_spec(spec)
    except Exception:  # noqa: BLE001
        return None


def serve(sock: socket.socket) -> None:
    """One request per batch: a frame with the tests, then a descriptor per test (S's peer)
    and the verdict pipe's write end; the reply is T's pid."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            batch = recv_frame(sock)
            n = len(batch["tests"])
            _, fds, _, _ = socket.recv_fds(sock, 1, n + 1)
        except (EOFError, OSError, KeyError, TypeError, ProtocolError):
            return
        pid = 0
        if len(fds) == n + 1:
            compiled = [_compiled_or_none(spec) for spec in batch["tests"]]
            pid = os.fork()
            if pid == 0:
                sock.close()
                _child(fds[:n], fds[n], batch, compiled)
        for fd in fds:
            os.close(fd)
        send_frame(sock, {"pid": pid} if pid else {"error": "descriptors missing"})


def main(cfg: dict) -> None:
    import gc

    from .zygote import ITEM_MODULES, WARM_MODULES

    get_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    for name in WARM_MODULES + ITEM_MODULES:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.collect()
    gc.freeze()
    serve(socket.socket(fileno=int(cfg["fd"])))
