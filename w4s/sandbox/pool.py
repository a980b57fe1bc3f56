"""Warm sandbox workers: isolation detection, launching, killing, and a bounded pool.

Each worker is the `worker` package (standard library only) run by a fresh interpreter with a
scrubbed environment, inside
new network, mount and PID namespaces when `unshare` works here, with its own cgroups
(a process cap and a memory cap on its whole tree) when cgroup v1 or v2 is writable. The
strongest available level is detected once, and `isolation_report()` says which one is
active.

Each item job gets a fresh socketpair from the parent (passed to the zygote with the job):
no other job ever held it, so nothing an earlier job wrote or left half-written reaches
it. The zygote watches its control socket and ends every job process, and its cgroups,
as soon as the parent hangs up, however the parent died (SIGTERM, SIGKILL, cancellation).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from w4s.sandbox import cgroups
from w4s.sandbox import worker as _w

log = logging.getLogger("w4s.sandbox")

# run as a file: the worker imports its package by its own name, nothing of w4s
WORKER_MAIN = str(Path(_w.__file__).resolve().parent / "__main__.py")
NOBODY_UID = 65534
PIDS_MAX = 128  # processes and threads per worker
START_TIMEOUT_S = 20.0
_ENV_ALLOW = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
_UNSHARE_LEVELS = (
    ("net+mount+pid", ["--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]),
    ("net+mount", ["--net", "--mount"]),
    ("net", ["--net"]),
)
_USERNS = ["--user", "--map-root-user"]  # lets a non-root user create the others, if enabled


def worker_env() -> dict[str, str]:
    """An allowlisted environment: no API keys or cloud credentials reach a worker."""
    env = {k: os.environ[k] for k in _ENV_ALLOW if k in os.environ}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", PYTHONHASHSEED="0",
               PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8", HOME="/nonexistent")
    return env


def _probe(cmd: list[str]) -> bool:
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10, env=worker_env())
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@functools.lru_cache(maxsize=1)
def detect_isolation() -> dict:
    """What this machine allows, probed once per process (a few ms of subprocesses)."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    namespaces, prefix = "none", []
    unshare = shutil.which("unshare") if sys.platform.startswith("linux") else None
    if unshare:
        for name, flags in _UNSHARE_LEVELS:
            flags = flags if root else [*_USERNS, *flags]
            if _probe([unshare, *flags, "--", "true"]):
                namespaces, prefix = name, [unshare, *flags, "--"]
                if not root:
                    namespaces = "user+" + name
                break
    cgroup = cgroups.detect()
    uid = None
    if root:
        try:
            import pwd

            uid = pwd.getpwnam("nobody").pw_uid
        except (ImportError, KeyError):
            uid = NOBODY_UID
    return {
        "host_root": root,
        "namespaces": namespaces,
        "unshare_prefix": prefix,
        "cgroup_base": cgroup,  # cgroups.CgroupBase or None
        "uid": uid,
        "landlock_abi": _w.landlock_abi(),
    }


def level_of(report: dict) -> str:
    """strong: namespaces + Landlock (writes and reads) + uid drop + process cap + no new
    unix sockets (seccomp); basic: rlimits and timeouts only."""
    ns = report.get("namespaces", "none")
    confined_fs = report.get("landlock_abi", 0) > 0 or report.get("private_tmp", False)
    capped = report.get("cgroup_pids", False) or report.get("pid_namespace", False)
    if (ns.endswith("net+mount+pid") and confined_fs and report.get("reads_confined")
            and report.get("uid_drop") and capped and report.get("unix_sockets_denied")):
        return "strong"
    if ns != "none" or confined_fs or report.get("uid_drop"):
        return "partial"
    return "basic"


class WorkerDied(Exception):
    """The worker process is gone or unusable; the pool replaces it."""


class Worker:
    """One warm zygote process, its control socket, and the running item's own channel."""

    _seq = itertools.count()

    def __init__(self, items: bool = True) -> None:
        """`items`: whether it runs workflow items; a worker that runs only programs and
        code tests does without their modules (and without `threading`, which every
        forked process would pay for)."""
        iso = detect_isolation()
        self.seq = next(Worker._seq)
        self.isolation: dict = {}
        self.job_pid: int | None = None  # the running item's session, in the zygote's view
        self.cgroups: dict | None = None
        self.tmp_root: str | None = None
        # the running item's end of its channel (`open_channel`); replies go out on a dup
        # of it, so an executor thread's send timeout never fights the reader's
        self.data: socket.socket | None = None
        self.data_out: socket.socket | None = None
        ctrl_parent, ctrl_child = socket.socketpair()
        try:
            if iso["cgroup_base"]:
                self.cgroups = cgroups.create(iso["cgroup_base"], f"{os.getpid()}-{self.seq}",
                                              PIDS_MAX)
            mount_tmp = "mount" in iso["namespaces"]
            if not mount_tmp:
                self.tmp_root = tempfile.mkdtemp(prefix="w4s-sandbox-")
                os.chmod(self.tmp_root, 0o711)
            dirs = self.cgroups["dirs"] if self.cgroups else {}
            cfg = {
                "ctrl_fd": ctrl_child.fileno(), "cgroup": dirs.get("pids"),
                "memory_cgroup": dirs.get("memory"), "cgroups": self.cgroups,
                "uid": iso["uid"], "mount_tmp": mount_tmp,
                "tmp_root": self.tmp_root or "/tmp/w4s", "landlock": iso["landlock_abi"] > 0,
                "host_root": iso["host_root"], "seccomp": True, "items": items,
                "owner": os.getpid(),  # in every worker process's command line: findable
            }
            cmd = [*iso["unshare_prefix"], sys.executable, "-s", "-B", WORKER_MAIN,
                   json.dumps(cfg)]
            self.proc = subprocess.Popen(
                cmd, pass_fds=(ctrl_child.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=worker_env(), cwd="/", start_new_session=True,
            )
        except BaseException:
            ctrl_parent.close()
            self._remove_dirs()
            raise
        finally:
            ctrl_child.close()
        self.ctrl = ctrl_parent
        self.alive = True
        try:
            hello = _w.recv_frame(self.ctrl, deadline=time.monotonic() + START_TIMEOUT_S)
        except (TimeoutError, EOFError, OSError, _w.ProtocolError) as e:
            self.kill()
            raise WorkerDied(f"sandbox worker did not start: {type(e).__name__} {e}") from e
        self.isolation = {
            "namespaces": iso["namespaces"],
            "pid_namespace": "pid" in iso["namespaces"],
            **hello.get("isolation", {}),
        }

    def send_item(self, job: dict) -> None:
        """Send an item job with a channel of its own: a fresh socketpair whose other end
        only that job's process receives (closed here once the zygote has it)."""
        self.close_channel()
        ours, theirs = socket.socketpair()
        try:
            _w.send_frame(self.ctrl, job, fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.data = ours
        self.data_out = socket.socket(fileno=os.dup(ours.fileno()))
        self.data_out.settimeout(10.0)

    def close_channel(self) -> None:
        """Forget the last item's channel: whatever its processes still write is lost."""
        for s in (self.data, self.data_out):
            if s is not None:
                s.close()
        self.data = self.data_out = None

    def kill(self) -> None:
        """Kill the zygote, its jailed children and anything they left, then clean up."""
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.job_pid and not self.isolation.get("pid_namespace"):
            # without a PID namespace the job's own session outlives the zygote
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.job_pid, signal.SIGKILL)
        if self.cgroups:
            cgroups.kill(self.cgroups["dirs"]["pids"])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        # closed, not forgotten: a thread still reading them sees a closed socket
        for s in (self.ctrl, self.data, self.data_out):
            if s is not None:
                s.close()
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        if self.cgroups:
            cgroups.remove(list(dict.fromkeys(self.cgroups["dirs"].values())))
        if self.tmp_root:
            shutil.rmtree(self.tmp_root, ignore_errors=True)


class WorkerPool:
    """At most `size` warm workers, started lazily; a dead worker is replaced on next use."""

    def __init__(self, size: int, *, items: bool = True) -> None:
        if size < 1:
            raise ValueError(f"`size` must be at least 1, but received {size!r}")
        self.size = size
        self.items = items
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def worker(self) -> Iterator[Worker]:
        """Borrow a worker; it goes back to the pool unless it was killed meanwhile."""
        self._slots.acquire()
        w: Worker | None = None
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the sandbox pool is closed")
                while self._idle and w is None:
                    cand = self._idle.pop()
                    if cand.alive and cand.proc.poll() is None:
                        w = cand
                    else:
                        self._forget(cand)
            if w is None:
                w = Worker(self.items)
                with self._lock:
                    self._all.add(w)
            yield w
        finally:
            if w is not None:
                with self._lock:
                    if w.alive and not self._closed:
                        self._idle.append(w)
                    else:
                        self._forget(w)
            self._slots.release()

    def _forget(self, w: Worker) -> None:
        w.kill()
        self._all.discard(w)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for w in workers:
            w.kill()


_shared: WorkerPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process-wide pool for `run_programs`, `run_tests` and `isolation_report` (lazily
    started); its workers run no workflow items.

    Kept apart from every Harness's pool, so a benchmark scorer running programs from
    inside a busy harness never waits on the harness's own workers.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WorkerPool(max(2, os.cpu_count() or 2), items=False)
            atexit.register(_shared.close)
        return _shared


def isolation_report() -> dict:
    """The isolation level active for workers started by this process, and its parts."""
    with shared_pool().worker() as w:
        report = dict(w.isolation)
    report["level"] = level_of(report)
    report["rlimits"] = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE"] + (
        [] if report.get("cgroup_pids") or detect_isolation()["host_root"] else ["RLIMIT_NPROC"]
    )
    report["memory_cap"] = (
        "memory_mb per job tree (memory cgroup), and RLIMIT_AS per process"
        if report.get("cgroup_memory") else "RLIMIT_AS per process only (no memory cgroup)")
    report["env"] = "allowlist: " + ", ".join(sorted(worker_env()))
    report.pop("pid_in_namespace", None)
    return report
