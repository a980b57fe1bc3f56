"""Waiting for a job with a timeout, killing it and what it left behind, reaping orphans.

The zygote is the jobs' parent (init, inside a PID namespace), so everything a job forks
or daemonizes ends up its to kill and reap before the next job starts.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import time


class ParentGone(Exception):
    """The parent closed its end of the control socket (it exited, or was killed)."""


def _hung_up(sock) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))


def wait_child(pid: int, timeout_s: float | None, *, kill: bool = True,
               watch=None) -> tuple[int | None, bool]:
    """(wait status, timed_out). On timeout the child's group is killed and reaped, unless
    `kill` is False: then (None, True) and the child runs on. With `watch` (the control
    socket), ParentGone as soon as the parent hangs up: nobody is left to want the result."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pidfd = -1
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
    try:
        delay = 0.0005
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if not kill:
                    return None, True
                kill_group(pid)
                os.waitpid(pid, 0)
                return None, True
            if watch is not None and _hung_up(watch):
                kill_group(pid)
                raise ParentGone
            if pidfd >= 0:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                if watch is not None:
                    poller.register(watch, select.POLLHUP)
                poller.poll(None if left is None else max(1, int(left * 1000)))
            else:
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, 0.02 if watch is None else 0.2)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def kill_group(pgid: int) -> None:
    for target in (lambda: os.killpg(pgid, signal.SIGKILL), lambda: os.kill(pgid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = {9: " (SIGKILL: memory or process limit)", 24: " (SIGXCPU: CPU-time limit)",
                11: " (SIGSEGV: stack overflow?)"}.get(sig, "")
        return f"worker crashed (signal {sig}){name}"
    return f"worker exited with code {os.WEXITSTATUS(status)} before returning a result"


def _namespace_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cgroup_pids(path: str) -> list[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return [int(p) for p in f.read().split()]


def jail_cleanup(cgroup: str | None, pgid: int | None = None, keep: int | None = None) -> None:
    """Kill whatever a finished job left running (daemonized or forked descendants).

    `cgroup`: the worker's (it lists the job's leftovers where no PID namespace does);
    `keep`: the spare child, forked ahead for the next job and never yet jailed.
    """
    if pgid is not None:
        kill_group(pgid)
    me = os.getpid()
    listing = None
    if me == 1:  # init of our own PID namespace: everyone else is a job leftover
        if keep is None:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        else:
            listing = _namespace_pids
    elif cgroup:
        listing = functools.partial(_cgroup_pids, cgroup)
    for _ in range(20 if listing else 0):
        try:
            pids = [p for p in listing() if p not in (me, keep)]
        except OSError:
            break
        if not pids:
            break
        for p in pids:
            kill_group(p)
        reap()
        time.sleep(0.001)
    reap()


def remove_dir(path: str) -> None:
    try:
        os.rmdir(path)  # most jobs leave their folder empty
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def reap() -> None:
    while True:  # reap orphans re-parented to us
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
