"""The next item's process, forked (and rehearsed) ahead while the current item waits on
the executor.

A fresh jailed process costs ~4 ms of CPU here (fork, page faults, exit), paid by every
item; forked ahead, most of it is paid while the executor is thinking instead of when a
wave of items starts at once. The spare keeps the zygote's uid until its job arrives, so
the job running beside it (a dropped uid) can neither signal nor trace it, and it gets its
folder and its channel to the parent only then: nothing the job beside it did can reach
them.
"""

from __future__ import annotations

import json
import os
import socket

from .framing import HEADER, ProtocolError, recv_frame, send_frame
from .item import run_item
from .jail import Jail, redirect_stdio
from .reap import kill_group, remove_dir

SPARE_AFTER_S = 0.05

_REHEARSAL = {"job": 0, "code": "def solver(agent, task):\n    return {'answer': [task, 1.5]}\n",
              "task": "rehearsal", "limit": 1000, "code_timeout_s": 1.0, "memory_mb": 64}


def _rehearse() -> None:
    """Run a trivial job's path (nothing is sent) so that its copy-on-write page faults,
    half a job's start-up CPU, happen now rather than when the real job is waited for."""
    record = run_item(None, dict(_REHEARSAL))  # type: ignore[arg-type] - never sends
    HEADER.pack(len(json.dumps(record, separators=(",", ":"), default=str)))


def _item_child(ctrl: socket.socket, handoff: socket.socket, jail: Jail, workdir: str) -> None:
    """A spare: forked and set up ahead, it waits for its job and the job's own channel
    (a socket no earlier job ever held), then jails itself and runs it."""
    code = 1
    try:
        ctrl.close()
        jail.detach()
        redirect_stdio(None)
        _rehearse()
        fds: list[int] = []
        try:
            job = recv_frame(handoff, fds=fds)
        except (EOFError, OSError, ProtocolError):
            return  # discarded unused
        handoff.close()
        if len(fds) != 1:
            return
        sock = socket.socket(fileno=fds[0])
        try:
            jail.settle(workdir)
            jail.lock(cpu_s=float(job["cpu_s"]), memory_mb=int(job["memory_mb"]), fsize_mb=16)
        except OSError as e:
            send_frame(sock, {"op": "result", "job": job["job"],
                              "error": f"sandbox setup failed: {type(e).__name__}: {e}"})
            return
        me = os.getpid()
        record = run_item(sock, job)
        if os.getpid() == me:  # a forked copy of the solver must not answer too
            record["op"] = "result"
            record["job"] = job["job"]
            send_frame(sock, record)
            code = 0
    finally:
        os._exit(code)


class Spare:
    """A forked item process waiting (unjailed, zygote uid, no folder yet) for its job on
    `handoff`."""

    def __init__(self, ctrl: socket.socket, jail: Jail) -> None:
        self.workdir = jail.dir_name()
        self.jail = jail
        ours, theirs = socket.socketpair()
        try:
            self.pid = os.fork()
        except OSError:
            for s in (ours, theirs):
                s.close()
            raise
        if self.pid == 0:
            ours.close()
            _item_child(ctrl, theirs, jail, self.workdir)
        theirs.close()
        self.handoff = ours

    @classmethod
    def ahead(cls, ctrl: socket.socket, jail: Jail) -> Spare | None:
        """A spare, or None when no process can be made now (e.g. the running job holds
        every pid its cgroup allows): the next job then forks its own."""
        try:
            return cls(ctrl, jail)
        except OSError:
            return None

    def start(self, job: dict, channel: int) -> bool:
        """Make the job's folder, hand over the job and its channel (fd `channel`); False
        if the spare died meanwhile (then discard it)."""
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done = self.pid
        if done:
            return False
        try:
            self.jail.make_dir(self.workdir)
            send_frame(self.handoff, job, fds=(channel,))
        except OSError:
            return False
        finally:
            self.handoff.close()
        return True

    def discard(self) -> None:
        self.handoff.close()  # it sees EOF and exits
        kill_group(self.pid)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        remove_dir(self.workdir)
