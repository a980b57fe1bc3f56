"""Standalone programs (a HumanEval completion with its tests, `agent.execute_code`), each
run as __main__ in its own fork with a timeout, its output captured to a capped file.
"""

from __future__ import annotations

import itertools
import json
import linecache
import os
import resource
import shutil
import sys
import time

from .jail import Jail, redirect_stdio
from .reap import describe_exit, jail_cleanup, wait_child
from .text import clip, error_text, one_line_error

PROGRAM_FILE = "<program>"
RESULT_NAME = ".w4s_result.json"
STDOUT_NAME = ".w4s_stdout.txt"


def seed_random(*parts: str) -> None:
    """Seed `random` from the job's content: reruns, and any worker, draw the same numbers."""
    import hashlib
    import random

    random.seed(hashlib.sha256("\0".join(parts).encode()).digest())


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
    """
    own_dir = workdir is None
    if own_dir:
        workdir = jail.make_dir() if jail else _nested_dir()
    out_path = os.path.join(workdir, STDOUT_NAME)
    res_path = os.path.join(workdir, RESULT_NAME)
    start = time.monotonic()
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
            redirect_stdio(out_path)
            record = exec_program(source, PROGRAM_FILE, want_solution, limit)
            if record.get("result") is not None:
                record["result"] = clip(record["result"], limit)
            sys.stdout.flush()
            fd = os.open(res_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, json.dumps(record).encode())
            os.close(fd)
            code = 0
        finally:
            os._exit(code)
    status, timed_out = wait_child(pid, timeout_s)
    seconds = time.monotonic() - start
    if jail is not None:
        jail_cleanup(jail.cgroup, pid, keep=keep)
    stdout = _read_capped(out_path, limit)
    record = None
    if not timed_out:
        try:
            with open(res_path) as f:
                record = json.loads(f.read(4 * limit + 4096))
        except (OSError, ValueError):
            record = None
    if own_dir:
        shutil.rmtree(workdir, ignore_errors=True)
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


def _read_capped(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit * 4 + 1)
    except OSError:
        return ""
    return clip(data.decode("utf-8", errors="replace"), limit)


_nested_seq = itertools.count()


def _nested_dir() -> str:
    path = os.path.join(os.getcwd(), f"code-{next(_nested_seq)}")
    os.mkdir(path, 0o700)
    return path
