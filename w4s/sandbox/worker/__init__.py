"""The sandbox worker: a warm "zygote" process that forks one jailed child per job.

Standard library only, and started as `python -s -B <this folder>/__main__.py CONFIG_JSON`
in a scrubbed environment, so it imports nothing of w4s (it is imported by its own name,
`worker`, from its parent folder, never through `w4s.sandbox`). The zygote runs only this
trusted code: it receives a job on its control socket, forks a child, and the child enters
the jail (rlimits, Landlock, uid drop; it is born in the zygote's cgroup) before it
touches untrusted code.

Jobs (frames, see `framing`):
  {"op": "item", ...}     run a workflow's `solver(agent, task)`; the child talks to the
                          parent on the *data* socket (executor calls, then its result);
                          the zygote answers {"op": "done"} on the *control* socket, which
                          the child closes first, so it can neither forge "done" nor read jobs.
  {"op": "programs", ...} run standalone programs, each in its own jailed fork with a
                          timeout the zygote enforces; the children close both sockets,
                          so only the zygote answers.

The parent enforces the item's wall clock; on timeout it kills the whole worker.

Modules: framing (the wire), text (clip, tracebacks), libc, landlock, readable (what a
job may read), jail, reap (waiting and killing), seeding (`random` per job), program
(forked programs), agent (the workflow's `agent`), item (running a workflow), spare
(forking ahead), zygote (the loop).
The parent uses only the names below.
"""

from .framing import HEADER, MAX_FRAME, ProtocolError, recv_frame, send_frame
from .landlock import landlock_abi
from .text import clip

__all__ = ["HEADER", "MAX_FRAME", "ProtocolError", "clip", "landlock_abi", "recv_frame",
           "send_frame"]
