"""The jail every job enters right after fork, before it touches untrusted code.

The zygote probes once what it can do (cgroup, private /tmp, Landlock, uid drop) and
builds the Landlock ruleset; each child then only applies it: limits, Landlock (writes
to its job folder, reads to the interpreter, see `readable`), and the uid drop.
"""

from __future__ import annotations

import itertools
import os
import resource
import signal
import sys

from .landlock import landlock_abi, landlock_restrict, landlock_ruleset
from .libc import (
    MNT_DETACH,
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_REC,
    PR_SET_PDEATHSIG,
    get_libc,
)
from .readable import interpreter_paths, read_policy, within


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
        if sys.platform.startswith("linux"):
            get_libc()  # once here: finding libc runs ldconfig, ~5 ms in every job otherwise
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
        # writes confined to tmp_root (job dirs live there), reads to `readable` as well
        self.ruleset: int | None = None
        self.readable: list[str] | None = None
        self.hidden: list[str] = []
        if self.landlock:
            policy = read_policy(own_proc=os.getpid() == 1)
            try:
                self.ruleset = landlock_ruleset(self.landlock, self.tmp_root, policy.rules,
                                                listable=policy.listable)
                self.readable, self.hidden = policy.roots, policy.hidden
            except OSError:
                self.landlock = 0
        self._seq = itertools.count()

    @staticmethod
    def _mount_private_tmp() -> bool:
        """A fresh size-capped tmpfs on /tmp: only possible inside our own mount namespace.

        Interpreter folders under /tmp (a virtualenv in a checkout there, as a CI clone may
        be) are bound back at their own paths, or jobs could not import from them; if that
        fails, /tmp stays shared rather than break imports.
        """
        libc = get_libc()
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            return False
        keep = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY))
                for p in interpreter_paths() if within(p, "/tmp")]
        try:
            if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV,
                          b"size=512m,mode=1777") != 0:
                return False
            for path, fd in keep:
                os.makedirs(path, mode=0o755, exist_ok=True)
                if libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None,
                              MS_BIND | MS_REC, None) != 0:
                    libc.umount2(b"/tmp", MNT_DETACH)
                    return False
            return True
        finally:
            for _, fd in keep:
                os.close(fd)

    def _expose_interpreter(self) -> list[str]:
        """Let the dropped uid import from an interpreter installed under a private dir.

        E.g. pyenv under /root (mode 700): cover /root with an empty tmpfs (hiding its
        secrets from workers) and bind the interpreter's own folder back at the same path.
        Returns the import paths still unreadable (empty when all is well).
        """
        libc = get_libc()
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
                    if libc.mount(src, tmp.encode(), None, MS_BIND | MS_REC, None) != 0:
                        return sorted(_import_dirs())
                    staged.append((child, tmp))
                if libc.mount(b"tmpfs", anc.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                              b"size=1m,mode=0755") != 0:
                    return sorted(_import_dirs())
                for child, tmp in staged:
                    dst = os.path.join(anc, child)
                    os.mkdir(dst, 0o755)
                    if libc.mount(tmp.encode(), dst.encode(), None, MS_MOVE, None) != 0:
                        return [dst]
        return sorted(_hidden_ancestors(_import_dirs()))

    def report(self) -> dict:
        return {
            "landlock_abi": self.landlock,
            "reads_confined": self.readable is not None,
            "readable": self.readable or [],
            "unreadable_packages": self.hidden,
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
            get_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
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


def redirect_stdio(path: str | None) -> None:
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
