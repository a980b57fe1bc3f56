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
import time

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
from .reap import jail_cleanup, reap
from .seccomp import UnixSocketFilter

# the worker's private /tmp: bounded in bytes and in files (an inode costs kernel memory
# that no size= counts); its pages are charged to the job's memory cgroup as well
TMP_SIZE_MB, TMP_INODES = 512, 16384
TMPFS_OPTIONS = f"size={TMP_SIZE_MB}m,nr_inodes={TMP_INODES},mode=1777"
ZYGOTE_MEMORY_MB = 96  # the zygote and the spare share the job's memory cgroup


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
        self.cgroups: dict | None = cfg.get("cgroups")
        self.cgroup: str | None = cfg.get("cgroup")  # the pids one: lists the job's processes
        self.memory_cgroup: str | None = cfg.get("memory_cgroup")
        self.memory_cap_mb: int | None = None
        self._joined: list[tuple[str, str]] = []  # (cgroup, where to go before removing it)
        for kind, path in (self.cgroups or {}).get("dirs", {}).items():
            # join once: children are born in it (a v1 attach costs ~1 ms each)
            try:
                if path not in (p for p, _ in self._joined):
                    with open(os.path.join(path, "cgroup.procs"), "w") as f:
                        f.write(str(os.getpid()))
                    self._joined.append((path, self.cgroups["exit_dirs"][kind]))
            except OSError:
                if kind == "pids":
                    self.cgroup = None
                else:
                    self.memory_cgroup = None
        if self.memory_cgroup:
            self._protect_zygote()
        self.uid: int | None = cfg.get("uid")
        if sys.platform.startswith("linux"):
            get_libc()  # once here, not in every forked job
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
        self.seccomp: UnixSocketFilter | None = None
        self.sealed = False  # `seal` applied: jobs inherit the filter from the zygote
        if cfg.get("seccomp", True) and sys.platform.startswith("linux"):
            self.seccomp = UnixSocketFilter()
            if not self.seccomp.supported:
                self.seccomp = None

    @staticmethod
    def _protect_zygote() -> None:
        """The zygote shares its memory cgroup with the job: let the OOM killer pick the
        job's processes (set to 1000 in `detach`), never the zygote."""
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("-1000")
        except OSError:
            pass

    def set_memory_cap(self, memory_mb: int) -> None:
        """One cap on the memory of the job's whole tree (its processes, its tmpfs files and
        their kernel memory): `memory_mb` plus the zygote's own share. Swap is not a way out."""
        if not self.memory_cgroup or memory_mb == self.memory_cap_mb:
            return
        limit = (max(64, memory_mb) + ZYGOTE_MEMORY_MB) << 20
        v2 = (self.cgroups or {}).get("version") == 2
        files = (["memory.max", "memory.swap.max"] if v2 else
                 ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"])
        values = [str(limit), "0"] if v2 else [str(limit), str(limit)]
        if not v2 and self.memory_cap_mb is not None and memory_mb > self.memory_cap_mb:
            files.reverse()  # v1: memsw must stay >= the memory limit at every step
            values.reverse()
        written = set()
        for name, value in zip(files, values, strict=True):
            try:
                with open(os.path.join(self.memory_cgroup, name), "w") as f:
                    f.write(value)
                written.add(name)
            except OSError:
                pass  # no swap accounting here, or a limit below what is in use now
        if ("memory.max" if v2 else "memory.limit_in_bytes") in written:
            self.memory_cap_mb = memory_mb

    def shutdown(self) -> None:
        """End every job process and remove the worker's cgroups: the parent is gone."""
        try:
            jail_cleanup(self.cgroup)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        me = str(os.getpid())
        for _ in range(200):  # killed is not yet gone: a cgroup is removable once they are
            reap()
            try:
                with open(os.path.join(self._joined[0][0], "cgroup.procs")) as f:
                    if f.read().split() in ([me], []):
                        break
            except (OSError, IndexError):
                break
            time.sleep(0.01)
        for path, exit_dir in self._joined:
            try:
                with open(os.path.join(exit_dir, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                os.rmdir(path)
            except OSError:
                pass

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
                          TMPFS_OPTIONS.encode()) != 0:
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
            "tmp_limits": {"size_mb": TMP_SIZE_MB, "inodes": TMP_INODES}
            if self.private_tmp else None,
            "unix_sockets_denied": self.seccomp is not None,
            "cgroup_pids": self.cgroup is not None,
            "cgroup_memory": self.memory_cgroup is not None,
            "uid": self.uid if self.uid is not None else os.getuid(),
            "uid_drop": self.uid is not None,
            "unreadable_import_dirs": self.unreadable,
            "pid_in_namespace": os.getpid(),
        }

    def dir_name(self) -> str:
        """A fresh job folder's path, not yet created."""
        return os.path.join(self.tmp_root, f"job-{os.getpid()}-{next(self._seq)}")

    def make_dir(self, path: str | None = None) -> str:
        """Create a job folder (owned by the job's uid). The zygote creates a spare's only
        when it hands the spare its job, after the previous job's processes are dead: a
        folder made earlier could be filled or chmod-ed by the job running beside it."""
        path = path or self.dir_name()
        os.mkdir(path, 0o700)
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)
        return path

    def enter(self, workdir: str, *, cpu_s: float, memory_mb: int, fsize_mb: int) -> None:
        """Called in the forked child, before any untrusted code: irreversible."""
        self.prepare(workdir)
        self.lock(cpu_s=cpu_s, memory_mb=memory_mb, fsize_mb=fsize_mb)

    @classmethod
    def prepare(cls, workdir: str) -> None:
        """The child's own session and directory; it still has the zygote's privileges."""
        cls.detach()
        cls.settle(workdir)

    @staticmethod
    def detach() -> None:
        """Die with the zygote, leave its session, and be the OOM killer's first choice
        (the zygote shares the job's memory cgroup; set while privileged, so the job can
        never lower it again)."""
        if sys.platform.startswith("linux"):
            get_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            try:  # os.open, not open(): a text file object costs ~70 page faults per job
                fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
                try:
                    os.write(fd, b"1000")
                finally:
                    os.close(fd)
            except OSError:
                pass
        os.setsid()

    @staticmethod
    def settle(workdir: str) -> None:
        os.chdir(workdir)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir

    def seal(self) -> None:
        """Apply, once in the zygote, the steps that are the same for every job and that a
        fork inherits: the seccomp filter (no new unix sockets, io_uring or other ABIs: the
        zygote needs none, its socketpairs stay allowed) and SIGXFSZ ignored (oversized
        writes fail, not kill; the zygote has no file-size limit). Each job's process then
        applies only what is its own: limits, its Landlock domain, the uid drop."""
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if self.seccomp is not None:
            self.seccomp.apply()
        self.sealed = True

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
        if not self.sealed:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail, not kill
        if self.ruleset is not None:
            landlock_restrict(self.ruleset)
        if self.seccomp is not None and not self.sealed:
            self.seccomp.apply()
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
