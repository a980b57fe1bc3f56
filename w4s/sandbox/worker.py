"""The sandbox worker process: a warm "zygote" that forks one jailed child per job.

Runs as a script (`python -I worker.py CONFIG_JSON`), standard library only, so it starts in
a scrubbed environment and imports nothing of w4s. The zygote runs only this trusted code:
it receives a job on its control socket, forks a child, and the child enters the jail
(rlimits, Landlock, uid drop; it is born in the zygote's cgroup) before it touches untrusted
code. Forking per job keeps the worker warm (imports are paid once) while no job can leak
state into the next.

Jobs (frames are 4-byte big-endian length + UTF-8 JSON, see `send_frame`):
  {"op": "item", ...}     run a workflow's `solver(agent, task)`; the child talks to the
                          parent on the *data* socket (executor calls, then its result);
                          the zygote answers {"op": "done"} on the *control* socket, which
                          the child closes first, so it can neither forge "done" nor read jobs.
  {"op": "programs", ...} run standalone programs, each in its own jailed fork with a
                          timeout the zygote enforces; the children close both sockets,
                          so only the zygote answers.

The parent enforces the item's wall clock; on timeout it kills the whole worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import json
import linecache
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import traceback

HEADER = struct.Struct(">I")
MAX_FRAME = 8 * 1024 * 1024  # a bigger frame from the child is a protocol error, not a buffer
WORKFLOW_FILE = "<workflow>"
PROGRAM_FILE = "<program>"
RESULT_NAME = ".w4s_result.json"
STDOUT_NAME = ".w4s_stdout.txt"


class ProtocolError(Exception):
    """The peer sent something that is not a frame of ours (oversized, truncated, not JSON)."""


# ---------------------------------------------------------------- framing


def send_frame(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    sock.sendall(HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        chunk = sock.recv(min(n - len(buf), 1 << 20))  # socket.timeout is a TimeoutError
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_frame(
    sock: socket.socket, *, deadline: float | None = None, max_bytes: int = MAX_FRAME
) -> dict:
    """Read one frame; TimeoutError past `deadline`, EOFError on a closed peer."""
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size, deadline))
    if size > max_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds the {max_bytes}-byte limit")
    data = _recv_exact(sock, size, deadline)
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"frame is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    return obj


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 40)] + f"... [{len(text) - limit + 40} chars truncated]"


# ---------------------------------------------------------------- Landlock (Linux >= 5.13)

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # same on x86_64 and aarch64
_FS_WRITE_FILE, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 1, 1 << 14, 1 << 15
_FS_WRITE_V1 = (1 << 1) | sum(1 << b for b in range(4, 13))  # write/remove/make-*
_FS_REFER = 1 << 13
_NET_BIND_CONNECT_TCP = 0b11
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11
_PR_SET_NO_NEW_PRIVS, _PR_SET_PDEATHSIG = 38, 1
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18

_libc = None


def _get_libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def landlock_abi() -> int:
    """Landlock ABI version, 0 when unavailable (not Linux, old kernel, disabled, seccomp)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        abi = _get_libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(0, int(abi))


def _landlock_fs_rights(abi: int) -> int:
    rights = _FS_WRITE_V1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def landlock_ruleset(abi: int, writable_dir: str) -> int:
    """A ruleset fd allowing file writes only beneath `writable_dir` (and to /dev/null);
    reads stay open. From ABI 4 it also denies TCP bind/connect, from ABI 6 signals and
    abstract unix sockets that leave the domain (so a workflow cannot signal the parent).
    Built once per worker; each job only enforces it (`landlock_restrict`).
    """
    libc = _get_libc()
    fs = _landlock_fs_rights(abi)
    fields = [fs]
    if abi >= 4:
        fields.append(_NET_BIND_CONNECT_TCP)
    if abi >= 6:
        fields.append(_SCOPE_ABSTRACT_UNIX_AND_SIGNAL)
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    fd = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        file_rights = fs & (_FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV)
        for path, rights in ((writable_dir, fs), ("/dev/null", file_rights)):
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("=Qi", rights, pfd)  # landlock_path_beneath_attr, packed
                buf = ctypes.create_string_buffer(rule, len(rule))
                if libc.syscall(_SYS_ADD_RULE, fd, 1, buf, 0) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(pfd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def landlock_restrict(ruleset_fd: int) -> None:
    """Enforce the ruleset on this process and its future children: irreversible."""
    libc = _get_libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_RESTRICT, ruleset_fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset_fd)


# ---------------------------------------------------------------- the jail


def _import_dirs() -> set[str]:
    dirs = {os.path.dirname(os.__file__)}
    dirs.update(p for p in sys.path if p and os.path.isdir(p))
    return {os.path.abspath(d) for d in dirs}


def _hidden_ancestors(dirs: set[str]) -> dict[str, set[str]]:
    """{ancestor that others cannot traverse: {its child on the way to an import dir}}."""
    out: dict[str, set[str]] = {}
    for d in dirs:
        parts = d.strip("/").split("/")
        for i in range(len(parts)):
            anc = "/" + "/".join(parts[:i])
            try:
                mode = os.stat(anc).st_mode
            except OSError:
                break
            if not mode & 0o001:
                out.setdefault(anc, set()).add(parts[i])
                break
    return out


class Jail:
    """What the zygote found it can do; applied to every child right after fork."""

    def __init__(self, cfg: dict) -> None:
        self.cgroup: str | None = cfg.get("cgroup")
        if self.cgroup:  # join once: children are born in it (a v1 attach costs ~1 ms each)
            try:
                with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                self.cgroup = None
        self.uid: int | None = cfg.get("uid")
        self.landlock = landlock_abi() if cfg.get("landlock", True) else 0
        self.tmp_root = cfg["tmp_root"]
        self.private_tmp = False
        self.unreadable: list[str] = []
        if cfg.get("mount_tmp"):
            self.private_tmp = self._mount_private_tmp()
        if self.private_tmp:
            self.tmp_root = "/tmp/w4s"
            if self.uid is not None:
                self.unreadable = self._expose_interpreter()
        elif self.uid is not None:
            self.unreadable = sorted(_hidden_ancestors(_import_dirs()))
        if self.unreadable:  # the dropped uid could not import the standard library
            self.uid = None
        # jobs that keep host root are not bound by RLIMIT_NPROC; everyone else is
        self.host_root = bool(cfg.get("host_root")) and self.uid is None
        os.makedirs(self.tmp_root, mode=0o711, exist_ok=True)
        self.ruleset: int | None = None  # writes confined to tmp_root (job dirs live there)
        if self.landlock:
            try:
                self.ruleset = landlock_ruleset(self.landlock, self.tmp_root)
            except OSError:
                self.landlock = 0
        self._seq = itertools.count()

    @staticmethod
    def _mount_private_tmp() -> bool:
        """A fresh size-capped tmpfs on /tmp: only possible inside our own mount namespace."""
        libc = _get_libc()
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            return False
        return libc.mount(b"tmpfs", b"/tmp", b"tmpfs", _MS_NOSUID | _MS_NODEV,
                          b"size=512m,mode=1777") == 0

    def _expose_interpreter(self) -> list[str]:
        """Let the dropped uid import from an interpreter installed under a private dir.

        E.g. pyenv under /root (mode 700): cover /root with an empty tmpfs (hiding its
        secrets from workers) and bind the interpreter's own folder back at the same path.
        Returns the import paths still unreadable (empty when all is well).
        """
        libc = _get_libc()
        stage = "/tmp/.w4s-stage"
        for _ in range(4):
            hidden = _hidden_ancestors(_import_dirs())
            if not hidden:
                return []
            os.makedirs(stage, mode=0o700, exist_ok=True)
            for anc, children in hidden.items():
                staged = []
                for i, child in enumerate(sorted(children)):
                    tmp = os.path.join(stage, f"{len(os.listdir(stage))}-{i}")
                    os.mkdir(tmp, 0o700)
                    src = os.path.join(anc, child).encode()
                    if libc.mount(src, tmp.encode(), None, _MS_BIND | _MS_REC, None) != 0:
                        return sorted(_import_dirs())
                    staged.append((child, tmp))
                if libc.mount(b"tmpfs", anc.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                              b"size=1m,mode=0755") != 0:
                    return sorted(_import_dirs())
                for child, tmp in staged:
                    dst = os.path.join(anc, child)
                    os.mkdir(dst, 0o755)
                    if libc.mount(tmp.encode(), dst.encode(), None, _MS_MOVE, None) != 0:
                        return [dst]
        return sorted(_hidden_ancestors(_import_dirs()))

    def report(self) -> dict:
        return {
            "landlock_abi": self.landlock,
            "private_tmp": self.private_tmp,
            "cgroup_pids": self.cgroup is not None,
            "uid": self.uid if self.uid is not None else os.getuid(),
            "uid_drop": self.uid is not None,
            "unreadable_import_dirs": self.unreadable,
            "pid_in_namespace": os.getpid(),
        }

    def make_dir(self) -> str:
        path = os.path.join(self.tmp_root, f"job-{os.getpid()}-{next(self._seq)}")
        os.mkdir(path, 0o700)
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)
        return path

    def enter(self, workdir: str, *, cpu_s: float, memory_mb: int, fsize_mb: int) -> None:
        """Called in the forked child, before any untrusted code: irreversible."""
        self.prepare(workdir)
        self.lock(cpu_s=cpu_s, memory_mb=memory_mb, fsize_mb=fsize_mb)

    @staticmethod
    def prepare(workdir: str) -> None:
        """The child's own session and directory; it still has the zygote's privileges."""
        if sys.platform.startswith("linux"):
            _get_libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.setsid()
        os.chdir(workdir)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir

    def lock(self, *, cpu_s: float, memory_mb: int, fsize_mb: int) -> None:
        """Limits, Landlock and the uid drop: the last step before untrusted code runs."""
        cpu = max(1, int(cpu_s + 1))
        limits = [
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_FSIZE, (fsize_mb << 20, fsize_mb << 20)),
            (resource.RLIMIT_NOFILE, (256, 256)),
            (resource.RLIMIT_CORE, (0, 0)),
        ]
        if memory_mb > 0 and hasattr(resource, "RLIMIT_AS"):
            limits.append((resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20)))
        if hasattr(resource, "RLIMIT_NPROC") and self.cgroup is None and not self.host_root:
            limits.append((resource.RLIMIT_NPROC, (256, 256)))  # never binds host root
        for which, value in limits:
            try:
                resource.setrlimit(which, value)
            except (ValueError, OSError):
                pass  # e.g. macOS rejects RLIMIT_AS; the wall clock still holds
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail, not kill
        if self.ruleset is not None:
            landlock_restrict(self.ruleset)
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)
        sys.dont_write_bytecode = True


def _redirect_stdio(path: str | None) -> None:
    """Point fds 0-2 away from the zygote's; stdout/stderr to `path` or /dev/null.

    sys.stdout/sys.stderr keep their objects (already on fds 1 and 2, and empty, since the
    zygote never prints): building new ones would copy pages in every forked job.
    """
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if path else null
    os.dup2(out, 1)
    os.dup2(null if path else out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)


# ---------------------------------------------------------------- waiting with a timeout


def wait_child(pid: int, timeout_s: float | None, *,
               kill: bool = True) -> tuple[int | None, bool]:
    """(wait status, timed_out). On timeout the child's group is killed and reaped, unless
    `kill` is False: then (None, True) and the child runs on."""
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
            if pidfd >= 0:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.poll(None if left is None else max(1, int(left * 1000)))
            else:
                time.sleep(delay if left is None else min(delay, left))
                delay = min(delay * 2, 0.02)
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


def _error_text(exc: BaseException, limit: int, *, skip_frames: int = 1) -> str:
    """Traceback from the first frame of untrusted code on, with its source lines."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > limit:  # keep the end: the failing line and the exception
        text = "... [traceback truncated]\n" + text[-(limit - 30):]
    return text.rstrip()


def _one_line_error(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"Error: {type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ").rstrip()


# ---------------------------------------------------------------- running a program


def run_source_in_child(source: str, filename: str, want_solution: bool, limit: int) -> dict:
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
        line = clip(_one_line_error(e), limit)
        return {"ok": False, "error": _error_text(e, limit), "line": line}


def run_program(
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
            _redirect_stdio(out_path)
            record = run_source_in_child(source, PROGRAM_FILE, want_solution, limit)
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
        jail_cleanup(jail, pid, keep=keep)
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


def _namespace_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cgroup_pids(path: str) -> list[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return [int(p) for p in f.read().split()]


def jail_cleanup(jail: Jail, pgid: int | None = None, keep: int | None = None) -> None:
    """Kill whatever a finished job left running (daemonized or forked descendants).

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
    elif jail.cgroup:
        listing = functools.partial(_cgroup_pids, jail.cgroup)
    for _ in range(20 if listing else 0):
        try:
            pids = [p for p in listing() if p not in (me, keep)]
        except OSError:
            break
        if not pids:
            break
        for p in pids:
            kill_group(p)
        _reap()
        time.sleep(0.001)
    _reap()


def _remove_dir(path: str) -> None:
    try:
        os.rmdir(path)  # most jobs leave their folder empty
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def _reap() -> None:
    while True:  # reap orphans re-parented to us
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


# ---------------------------------------------------------------- the agent (workflow API)


class ExecutorError(RuntimeError):
    """The executor call failed (backend error or budget); raised inside the workflow."""


class _Channel:
    """Request/response over the socket, safe for a workflow that calls from many threads."""

    def __init__(self, sock: socket.socket, job: int) -> None:
        self.sock = sock
        self.job = job
        self.pid = os.getpid()
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._results: dict[int, dict] = {}
        self._reading = False
        self._ids = itertools.count(1)

    def request(self, msg: dict) -> dict:
        if os.getpid() != self.pid:
            raise RuntimeError("agent calls are only allowed from the solver's own process")
        rid = next(self._ids)
        msg["id"] = rid
        msg["job"] = self.job
        with self._send_lock:
            send_frame(self.sock, msg)
        with self._cond:
            while rid not in self._results:
                if self._reading:
                    self._cond.wait()
                    continue
                self._reading = True
                self._cond.release()
                try:
                    frame = recv_frame(self.sock)
                except BaseException:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self._reading = False
                if frame.get("job") == self.job:  # else a late reply meant for an earlier job
                    self._results[frame.get("id")] = frame
                self._cond.notify_all()
            return self._results.pop(rid)


JSON_MARKER = "<unparseable JSON>"
MISSING_MARKER = "<missing>"


def _messages(prompt, system: str | None) -> list[dict]:
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt
    ):
        msgs = [{"role": str(m.get("role", "user")), "content": m["content"]} for m in prompt]
    else:
        raise TypeError("`prompt` must be a string or a list of {'role', 'content'} dicts")
    if system is not None:
        msgs = [{"role": "system", "content": str(system)}] + msgs
    return msgs


def extract_json_object(text: str) -> dict | None:
    """The reply as a JSON object, or the first {...} object inside surrounding prose."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{":
            try:
                obj, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


class Agent:
    """The `agent` a workflow's `solver(agent, task)` receives. Every method is a proxy:
    the executor call is made by the parent, which holds the keys, the cache and the meter.
    """

    def __init__(self, channel: _Channel, *, code_timeout_s: float, memory_mb: int,
                 limit: int, max_prompt_chars: int = 1_000_000) -> None:
        self._channel = channel
        self._code_timeout_s = code_timeout_s
        self._memory_mb = memory_mb
        self._limit = limit
        self._max_prompt_chars = max_prompt_chars

    def _complete(self, messages: list[dict], *, n: int, temperature: float,
                  max_tokens: int | None, json_mode: bool) -> list[str]:
        if not isinstance(n, int) or not 1 <= n <= 64:
            raise ValueError(f"`n` must be an integer in [1, 64], but received {n!r}")
        if not 0.0 <= float(temperature) <= 2.0:
            raise ValueError(f"`temperature` must be in [0, 2], but received {temperature!r}")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise ValueError(f"`max_tokens` must be a positive integer, got {max_tokens!r}")
        size = sum(len(m["content"]) for m in messages)
        if size > self._max_prompt_chars:
            raise ValueError(f"prompt of {size} chars exceeds {self._max_prompt_chars}")
        reply = self._channel.request({
            "op": "call", "messages": messages, "n": n, "temperature": float(temperature),
            "max_tokens": max_tokens, "json_mode": bool(json_mode),
        })
        if "error" in reply:
            raise ExecutorError(reply["error"])
        return [str(t) for t in reply["texts"]]

    def llm(self, prompt, temperature: float = 0.0, system: str | None = None,
            max_tokens: int | None = None) -> str:
        """One executor reply to `prompt` (a string, or a list of chat messages)."""
        return self._complete(_messages(prompt, system), n=1, temperature=temperature,
                              max_tokens=max_tokens, json_mode=False)[0]

    def sample(self, prompt, n: int, temperature: float = 0.8, system: str | None = None,
               max_tokens: int | None = None) -> list[str]:
        """`n` independent executor replies (one call; cached per sample)."""
        return self._complete(_messages(prompt, system), n=n, temperature=temperature,
                              max_tokens=max_tokens, json_mode=False)

    def call_json_format_llm(self, messages, temperature: float = 0.0,
                             num_of_response: int = 1, agent_role: str = "helpful assistant",
                             return_dict_keys=("answer",), instructions: str = "",
                             **legacy) -> list[dict]:
        """W4S-compatible: `num_of_response` dicts holding exactly `return_dict_keys`."""
        if "requirements" in legacy and not instructions:
            instructions = str(legacy.pop("requirements"))
        if legacy:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(legacy))}")
        if isinstance(return_dict_keys, str):
            return_dict_keys = [return_dict_keys]
        keys = [str(k) for k in return_dict_keys]
        shape = json.dumps({k: f"<your {k}>" for k in keys})
        system = (
            f"You are a {agent_role}.\n\n{instructions}\n\n"
            f"Reply with exactly one JSON object in this format:\n{shape}\n"
            "Include every key, and nothing outside the JSON object."
        )
        msgs = _messages(messages, None)
        msgs = [{"role": "system", "content": system}] + [m for m in msgs if m["role"] != "system"]
        texts = self._complete(msgs, n=int(num_of_response), temperature=temperature,
                               max_tokens=None, json_mode=True)
        out = []
        for text in texts:
            obj = extract_json_object(text)
            if obj is None:
                out.append({k: JSON_MARKER for k in keys})
            else:
                out.append({k: obj.get(k, MISSING_MARKER) for k in keys})
        return out

    def execute_code(self, code: str) -> str:
        """Run `code` in a nested sandboxed process: str(solution()) if it defines
        `solution`, else its printed output; "Error: <Type: message>" when it fails."""
        code = _strip_fences(str(code))
        rec = run_program(None, code, timeout_s=self._code_timeout_s, memory_mb=self._memory_mb,
                          limit=self._limit, want_solution=True,
                          close_fds=(self._channel.sock.fileno(),))
        if not rec.get("ok"):
            return rec.get("line") or "Error: program failed"
        if rec.get("result") is not None:
            return rec["result"]
        return rec.get("stdout", "").strip()


def _strip_fences(code: str) -> str:
    text = code.strip()
    if "```" not in text:
        return text
    blocks = text.split("```")
    # the contents of the first fenced block, minus its language tag
    body = blocks[1] if len(blocks) >= 2 else text
    first, _, rest = body.partition("\n")
    if first.strip().isidentifier() or first.strip() == "":
        return rest.strip("\n")
    return body.strip("\n")


def seed_random(*parts: str) -> None:
    """Seed `random` from the job's content: reruns, and any worker, draw the same numbers."""
    import hashlib
    import random

    random.seed(hashlib.sha256("\0".join(parts).encode()).digest())


def run_item(sock: socket.socket, job: dict) -> dict:
    """Child side of an item: exec the workflow, call its solver, shape the result."""
    limit = int(job["limit"])
    code = job["code"]
    seed_random(code, job["task"])
    linecache.cache[WORKFLOW_FILE] = (len(code), None, code.splitlines(True), WORKFLOW_FILE)
    agent = Agent(_Channel(sock, job["job"]), code_timeout_s=float(job["code_timeout_s"]),
                  memory_mb=int(job["memory_mb"]), limit=limit)
    glb: dict = {"__name__": "workflow", "__builtins__": __builtins__}
    try:
        exec(compile(code, WORKFLOW_FILE, "exec"), glb)  # noqa: S102 - inside the jail
        solver = glb.get("solver")
        if not callable(solver):
            return {"error": "workflow defines no callable `solver`"}
        out = solver(agent, job["task"])
    except SystemExit as e:
        return {"error": f"solver called sys.exit({e.code!r})"}
    except BaseException as e:  # noqa: BLE001 - every failure becomes the item's error
        return {"error": _error_text(e, limit)}
    if not isinstance(out, dict):
        return {"error": f"solver returned {type(out).__name__}, not dict"}
    if "answer" not in out:
        return {"error": "solver's dict has no 'answer' key"}
    answer = out["answer"]
    try:
        text = str(answer)
    except BaseException as e:  # noqa: BLE001
        return {"error": f"str(answer) failed: {_one_line_error(e)}"}
    record: dict = {"answer_str": clip(text, limit)}
    try:
        encoded = json.dumps(answer, allow_nan=True)
        if len(encoded) <= 4 * limit:
            record["answer_json"] = encoded
    except (TypeError, ValueError, RecursionError):
        pass
    return record


def _item_child(ctrl: socket.socket, sock: socket.socket, handoff: socket.socket,
                jail: Jail, workdir: str) -> None:
    """A spare: forked and set up ahead, it waits for its job, then jails itself and runs it."""
    code = 1
    try:
        ctrl.close()
        jail.prepare(workdir)
        _redirect_stdio(None)
        _rehearse()
        try:
            job = recv_frame(handoff)
        except (EOFError, OSError, ProtocolError):
            return  # discarded unused
        handoff.close()
        try:
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


SPARE_AFTER_S = 0.05


_REHEARSAL = {"job": 0, "code": "def solver(agent, task):\n    return {'answer': [task, 1.5]}\n",
              "task": "rehearsal", "limit": 1000, "code_timeout_s": 1.0, "memory_mb": 64}


def _rehearse() -> None:
    """Run a trivial job's path (nothing is sent) so that its copy-on-write page faults,
    half a job's start-up CPU, happen now rather than when the real job is waited for."""
    record = run_item(None, dict(_REHEARSAL))  # type: ignore[arg-type] - never sends
    HEADER.pack(len(json.dumps(record, separators=(",", ":"), default=str)))


class _Spare:
    """The next job's process, forked (and rehearsed) while the current job waits on the
    executor.

    A fresh jailed process costs ~4 ms of CPU here (fork, page faults, exit), paid by every
    item; forked ahead, most of it is paid while the executor is thinking instead of when a
    wave of items starts at once. The spare keeps the zygote's uid until its job arrives, so
    the job running beside it (a dropped uid) can neither signal nor trace it.
    """

    def __init__(self, ctrl: socket.socket, data: socket.socket, jail: Jail) -> None:
        self.workdir = jail.make_dir()
        try:
            ours, theirs = socket.socketpair()
        except OSError:
            _remove_dir(self.workdir)
            raise
        try:
            self.pid = os.fork()
        except OSError:
            for s in (ours, theirs):
                s.close()
            _remove_dir(self.workdir)
            raise
        if self.pid == 0:
            ours.close()
            _item_child(ctrl, data, theirs, jail, self.workdir)
        theirs.close()
        self.handoff = ours

    @classmethod
    def ahead(cls, ctrl: socket.socket, data: socket.socket, jail: Jail) -> _Spare | None:
        """A spare, or None when no process can be made now (e.g. the running job holds
        every pid its cgroup allows): the next job then forks its own."""
        try:
            return cls(ctrl, data, jail)
        except OSError:
            return None

    def start(self, job: dict) -> bool:
        """Hand the job over; False if the spare died meanwhile (then discard it)."""
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done = self.pid
        if done:
            return False
        try:
            send_frame(self.handoff, job)
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
        _remove_dir(self.workdir)


# ---------------------------------------------------------------- zygote main loop


def serve(ctrl: socket.socket, data: socket.socket, jail: Jail) -> None:
    send_frame(ctrl, {"op": "hello", "isolation": jail.report()})
    spare: _Spare | None = None
    while True:
        try:
            job = recv_frame(ctrl)
        except (EOFError, OSError):
            return
        op = job.get("op")
        if op == "item":
            current = spare if spare is not None else _Spare(ctrl, data, jail)
            if not current.start(job):
                current.discard()
                current = _Spare(ctrl, data, jail)
                current.start(job)
            pid, workdir = current.pid, current.workdir
            # the job's session id, so a parent without our PID namespace can kill it
            send_frame(ctrl, {"op": "started", "job": job["job"], "pid": pid})
            # a job still running after a moment is waiting on the executor: fork the next
            # job's process now, off the CPU burst when a wave of items starts together
            # (only when jobs drop to another uid: one sharing the spare's could stop it)
            status, running = wait_child(pid, SPARE_AFTER_S, kill=False)
            spare = None
            if running:
                if jail.uid is not None:
                    spare = _Spare.ahead(ctrl, data, jail)
                status, _ = wait_child(pid, None)
            jail_cleanup(jail, pid, keep=spare.pid if spare else None)
            _remove_dir(workdir)
            reply = {"op": "done", "job": job["job"], "status": status,
                     "exit": None if status is None else describe_exit(status)}
            send_frame(ctrl, reply)
        elif op == "programs":
            results = [
                run_program(jail, source, timeout_s=float(job["timeout_s"]),
                            memory_mb=int(job["memory_mb"]), limit=int(job["limit"]),
                            close_fds=(ctrl.fileno(), data.fileno()),
                            keep=spare.pid if spare else None)
                for source in job["sources"]
            ]
            send_frame(ctrl, {"op": "done", "job": job["job"], "results": results})
        elif op == "ping":
            send_frame(ctrl, {"op": "pong", "job": job.get("job")})


# Imported once by the zygote so that forked jobs find them warm (programs and workflows
# use them all the time; a per-job import from disk costs about a millisecond each).
WARM_MODULES = (
    "bisect", "collections", "copy", "dataclasses", "datetime", "decimal", "fractions",
    "functools", "hashlib", "heapq", "itertools", "math", "operator", "random", "re",
    "statistics", "string", "typing", "concurrent.futures", "encodings.idna", "textwrap",
)


def _warm_up() -> None:
    import gc
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.collect()
    gc.freeze()  # forked children then do not copy the zygote's heap to update GC state


def main() -> None:
    cfg = json.loads(sys.argv[1])
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    ctrl = socket.socket(fileno=int(cfg["ctrl_fd"]))
    data = socket.socket(fileno=int(cfg["data_fd"]))
    for s in (ctrl, data):
        os.set_inheritable(s.fileno(), False)
    jail = Jail(cfg)
    _warm_up()
    serve(ctrl, data, jail)


if __name__ == "__main__":
    main()
