"""Standalone programs (`run_programs`, `agent.execute_code`), each run as __main__ in its
own fork with a timeout, its output captured to a capped unnamed file; and the solution
side (S) of a code test, see `solution` and `tester`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import linecache
import os
import resource
import select
import socket
import sys
import tempfile
import time

from .jail import Jail, redirect_stdio
from .reap import describe_exit, jail_cleanup, kill_group, remove_dir, wait_child
from .seeding import seed_random
from .solution import serve_solution
from .text import clip, error_text, one_line_error

PROGRAM_FILE = "<program>"


def exec_program(source: str, filename: str, want_solution: bool, limit: int) -> dict:
    """Exec `source` as __main__ (runs in the jailed child). Returns the result record."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    seed_random(source)
    glb: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, filename, "exec"), glb)  # noqa: S102 - inside the jail
        result = None
        if want_solution and callable(glb.get("solution")):
            result = str(glb["solution"]())
        return {"ok": True, "result": result}
    except SystemExit as e:
        if e.code in (None, 0):
            return {"ok": True, "result": None}
        return {"ok": False, "error": f"SystemExit: program exited with code {e.code!r}",
                "line": f"Error: SystemExit: {e.code!r}"}
    except BaseException as e:  # noqa: BLE001 - every failure becomes a result
        line = clip(one_line_error(e), limit)
        return {"ok": False, "error": error_text(e, limit), "line": line}


def run_forked_program(
    jail: Jail | None, source: str, *, timeout_s: float, memory_mb: int, limit: int,
    want_solution: bool = False, close_fds: tuple[int, ...] = (), workdir: str | None = None,
    keep: int | None = None,
) -> dict:
    """Fork, jail (when `jail` is given), run, wait with a timeout, read capped output.

    Used by the zygote for `run_programs` and, nested, by a workflow's `execute_code`
    (jail=None there: the item child is already jailed and the grandchild inherits it).
    Output and result go to unnamed files opened here before the fork: afterwards nothing
    is opened by path, so a job that swaps a name for a symlink or a FIFO changes nothing.
    """
    own_dir = workdir is None
    if own_dir:
        workdir = jail.make_dir() if jail else _nested_dir()
    private = jail.tmp_root if jail else workdir
    out_fd, res_fd = _unnamed_file(private), _unnamed_file(private)
    start = time.monotonic()
    try:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                for fd in close_fds:
                    os.close(fd)
                if jail is not None:
                    jail.enter(workdir, cpu_s=timeout_s, memory_mb=memory_mb, fsize_mb=16)
                else:
                    os.setpgid(0, 0)
                    cpu = max(1, int(timeout_s + 1))
                    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
                    os.chdir(workdir)
                redirect_stdio(None)
                os.dup2(out_fd, 1)
                record = exec_program(source, PROGRAM_FILE, want_solution, limit)
                if record.get("result") is not None:
                    record["result"] = clip(record["result"], limit)
                sys.stdout.flush()
                os.pwrite(res_fd, json.dumps(record).encode(), 0)
                code = 0
            finally:
                os._exit(code)
        status, timed_out = wait_child(pid, timeout_s)
        seconds = time.monotonic() - start
        if jail is not None:
            jail_cleanup(jail.cgroup, pid, keep=keep)
        stdout = clip(_read_head(out_fd, limit * 4 + 1).decode("utf-8", errors="replace"),
                      limit)
        record = None
        if not timed_out:
            try:
                record = json.loads(_read_head(res_fd, 4 * limit + 4096))
            except ValueError:
                record = None
    finally:
        os.close(out_fd)
        os.close(res_fd)
    if own_dir:
        remove_dir(workdir)
    if timed_out:
        msg = f"timeout after {timeout_s:g}s"
        return {"ok": False, "error": msg, "line": f"Error: TimeoutError: {msg}",
                "stdout": stdout, "seconds": seconds}
    if not isinstance(record, dict) or "ok" not in record:
        why = describe_exit(status).replace("worker", "program")
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            why = "program exited (os._exit) before finishing"
        return {"ok": False, "error": why, "line": f"Error: {why}", "stdout": stdout,
                "seconds": seconds}
    record.update(stdout=stdout, seconds=seconds)
    return record


def run_forked_solutions(
    jail: Jail, sources: list[str], conn_fds: list[int], *, cpu_s: float, wall_s: float,
    memory_mb: int, limit: int, close_fds: tuple[int, ...] = (), keep: int | None = None,
) -> list[dict]:
    """S for each code test of a batch, forked at once: jailed processes that run only
    their `source`, then wait for their test process to call (it times each test from
    then on), on their own `conn_fd` (see `solution`), holding nothing else of ours.

    Each S is killed as soon as its test process hangs up (so one that spins after its
    test cannot hold up the batch), or at `wall_s`; `cpu_s` bounds its CPU.
    """
    started = []
    for source, conn_fd in zip(sources, conn_fds, strict=True):
        workdir = jail.make_dir()
        try:
            pid = os.fork()
        except OSError:
            os.close(conn_fd)
            raise
        if pid == 0:  # child
            try:
                for fd in close_fds:
                    os.close(fd)
                jail.enter(workdir, cpu_s=cpu_s, memory_mb=memory_mb, fsize_mb=16)
                # its output is nobody's business: fds 0-2 are the zygote's, /dev/null
                if conn_fd != 3:
                    os.dup2(conn_fd, 3)
                os.closerange(4, 1 << 16)  # other tests' sockets among them
                serve_solution(socket.socket(fileno=3), source, limit)
            finally:
                os._exit(0)
        started.append((pid, conn_fd, workdir, time.monotonic()))
    results = _watch_solutions(started, time.monotonic() + wall_s)
    jail_cleanup(jail.cgroup, keep=keep)
    for _, _, workdir, _ in started:
        remove_dir(workdir)
    return results


def _watch_solutions(started: list[tuple[int, int, str, float]], deadline: float) -> list[dict]:
    """Wait for each S: it ends by itself, or its peer (T) hangs up and it is killed, or
    the deadline passes. Our copy of its socket (`conn_fd`) shows the hang-up, a pidfd the
    exit, so this sleeps until one of them happens (no polling tick, no spinning while a
    killed S is still exiting); without pidfds, exits are checked every 10 ms."""
    rdhup = getattr(select, "POLLRDHUP", 0x2000)
    poller = select.poll()
    pending = dict(enumerate(started))
    events: dict[int, tuple[int, bool]] = {}  # fd -> (index, is the pidfd)
    pidfds: dict[int, int] = {}
    for i, (pid, conn_fd, _, _) in pending.items():
        poller.register(conn_fd, rdhup)
        events[conn_fd] = (i, False)
        try:
            pidfds[i] = os.pidfd_open(pid)
        except (AttributeError, OSError):
            continue
        poller.register(pidfds[i], select.POLLIN)
        events[pidfds[i]] = (i, True)
    tick = None if len(pidfds) == len(pending) else 10
    results: list[dict] = [{} for _ in started]
    try:
        while pending:
            left = deadline - time.monotonic()
            timed_out = left <= 0
            exited = []
            for fd, _ in [] if timed_out else poller.poll(
                    max(1, int(left * 1000)) if tick is None else min(left * 1000, tick)):
                i, is_pidfd = events[fd]
                if is_pidfd:
                    exited.append(i)
                elif i in pending:  # T is done with it: nothing more to do
                    kill_group(pending[i][0])
                    poller.unregister(fd)  # hung up for good: would wake us again and again
            for i in list(pending) if timed_out or tick is not None else exited:
                if i not in pending:
                    continue
                pid, conn_fd, _, t0 = pending[i]
                if timed_out:
                    kill_group(pid)
                done, status = os.waitpid(pid, 0 if timed_out else os.WNOHANG)
                if not done:
                    continue
                with contextlib.suppress(KeyError):
                    poller.unregister(conn_fd)
                if i in pidfds:
                    poller.unregister(pidfds[i])
                os.close(conn_fd)
                del pending[i]
                exit_ = None if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 else \
                    describe_exit(status).replace("worker", "solution")
                results[i] = {"timed_out": timed_out, "seconds": time.monotonic() - t0,
                              "exit": exit_}
    finally:
        for fd in pidfds.values():
            os.close(fd)
    return results


def _unnamed_file(folder: str) -> int:
    """A file without a name (O_TMPFILE), or one unlinked at once where that is missing."""
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError:
            pass
    fd, path = tempfile.mkstemp(dir=folder)
    os.unlink(path)
    return fd


def _read_head(fd: int, size: int) -> bytes:
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return b""


_nested_seq = itertools.count()


def _nested_dir() -> str:
    path = os.path.join(os.getcwd(), f"code-{next(_nested_seq)}")
    os.mkdir(path, 0o700)
    return path
