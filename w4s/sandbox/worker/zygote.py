"""The zygote: a warm worker process that answers jobs on its control socket by forking
one jailed child per job (imports are paid once, yet no job can leak state into the next).

It runs only this trusted code; see the package docstring for the jobs it serves.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from .framing import ProtocolError, recv_frame, send_frame
from .jail import Jail, redirect_stdio
from .program import run_forked_program, run_forked_solutions
from .reap import ParentGone, describe_exit, jail_cleanup, remove_dir, wait_child
from .solution import rehearse as rehearse_solution

if TYPE_CHECKING:
    from .spare import Spare


def serve(ctrl: socket.socket, jail: Jail, items: ModuleType | None = None) -> None:
    """Answer jobs until the parent goes away (EOF or hang-up on `ctrl`, even mid-job).

    `items`: the `spare` module, loaded by `main` in a worker that runs workflow items;
    None in one that runs only programs and code tests (item jobs are then refused).
    """
    send_frame(ctrl, {"op": "hello", "isolation": jail.report()})
    spare: Spare | None = None
    try:
        while True:
            fds: list[int] = []
            try:
                job = recv_frame(ctrl, fds=fds)
            except (EOFError, OSError):
                return
            op = job.get("op")
            if "memory_mb" in job:
                jail.set_memory_cap(int(job["memory_mb"]))
            if op == "item":
                if items is None:
                    raise ProtocolError("this worker runs programs and code tests only")
                if len(fds) != 1:
                    raise ProtocolError("an item job needs exactly one channel descriptor")
                channel, fds = fds[0], []
                current = spare if spare is not None else items.Spare(ctrl, jail)
                if not current.start(job, channel):
                    current.discard()
                    current = items.Spare(ctrl, jail)
                    current.start(job, channel)
                os.close(channel)  # the job's and the parent's ends are the only ones left
                spare = None
                pid, workdir = current.pid, current.workdir
                # the job's session id, so a parent without our PID namespace can kill it
                send_frame(ctrl, {"op": "started", "job": job["job"], "pid": pid})
                # a job still running after a moment is waiting on the executor: fork the
                # next job's process now, off the CPU burst when a wave of items starts
                # together (only when jobs drop to another uid: one sharing the spare's
                # could stop it)
                status, running = wait_child(pid, items.SPARE_AFTER_S, kill=False,
                                             watch=ctrl)
                if running:
                    if jail.uid is not None:
                        spare = items.Spare.ahead(ctrl, jail)
                    status, _ = wait_child(pid, None, watch=ctrl)
                jail_cleanup(jail.cgroup, pid, keep=spare.pid if spare else None)
                remove_dir(workdir)
                reply = {"op": "done", "job": job["job"], "status": status,
                         "exit": None if status is None else describe_exit(status)}
                send_frame(ctrl, reply)
            elif op == "programs":
                results = [
                    run_forked_program(jail, source, timeout_s=float(job["timeout_s"]),
                                       memory_mb=int(job["memory_mb"]), limit=int(job["limit"]),
                                       close_fds=(ctrl.fileno(),) + (
                                           (spare.handoff.fileno(),) if spare else ()),
                                       keep=spare.pid if spare else None)
                    for source in job["sources"]
                ]
                send_frame(ctrl, {"op": "done", "job": job["job"], "results": results})
            elif op == "solutions":  # S of code tests; T runs in the parent's test server
                _, sol_fds, _, _ = socket.recv_fds(ctrl, 1, len(job["sources"]))
                results = run_forked_solutions(
                    jail, job["sources"][:len(sol_fds)], sol_fds, cpu_s=float(job["timeout_s"]),
                    wall_s=float(job["wall_s"]),
                    memory_mb=int(job["memory_mb"]), limit=int(job["limit"]),
                    close_fds=(ctrl.fileno(),) + ((spare.handoff.fileno(),) if spare else ()),
                    keep=spare.pid if spare else None)
                send_frame(ctrl, {"op": "done", "job": job["job"], "results": results})
            elif op == "ping":
                send_frame(ctrl, {"op": "pong", "job": job.get("job")})
            for fd in fds:
                os.close(fd)
    except ParentGone:
        return


# Imported once by the zygote so that forked jobs find them warm (programs and workflows
# use them all the time; a per-job import from disk costs about a millisecond each).
WARM_MODULES = (
    "bisect", "collections", "copy", "dataclasses", "datetime", "decimal", "fractions",
    "functools", "hashlib", "heapq", "itertools", "math", "operator", "random", "re",
    "statistics", "string", "typing", "encodings.idna", "textwrap",
)
# and by a zygote that runs workflow items (they use threads): never by one that runs only
# programs and code tests, since `threading` registers an after-fork hook that every forked
# process then runs (~0.3 ms of CPU and ~120 page faults each, for nothing)
ITEM_MODULES = ("concurrent.futures", "threading")


def _load_items() -> ModuleType:
    """The workflow side (spare -> item -> agent), imported before the jail is set up: a
    checkout under /tmp is hidden from the zygote once its private /tmp is mounted."""
    from . import spare

    return spare


def _warm_up(items: bool) -> None:
    import gc
    import importlib

    for name in WARM_MODULES + (ITEM_MODULES if items else ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    rehearse_solution()
    gc.collect()
    gc.freeze()  # forked children then do not copy the zygote's heap to update GC state


def main(argv: list[str] | None = None) -> None:
    """`CONFIG_JSON` in argv[1]: the socket fds, the cgroup, the uid and what to confine."""
    cfg = json.loads((sys.argv if argv is None else argv)[1])
    ctrl = socket.socket(fileno=int(cfg["ctrl_fd"]))
    os.set_inheritable(ctrl.fileno(), False)
    redirect_stdio(None)  # whatever started us: every job's fds 0-2 start as /dev/null
    items = _load_items() if cfg.get("items", True) else None
    jail = Jail(cfg)
    try:
        _warm_up(items is not None)
        jail.seal()
        serve(ctrl, jail, items)
    finally:
        # the parent closed us or died (SIGTERM, SIGKILL, a cancelled flow run): end every
        # job process and remove our cgroups, whoever else is left to do it
        jail.shutdown()
