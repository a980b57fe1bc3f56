"""Per-worker cgroups: one process cap and one memory cap on a worker's whole tree.

cgroup v1 (a `pids` and a `memory` hierarchy, as on the CI machine) and v2 (the unified
hierarchy, with the `pids` and `memory` controllers delegated to a `w4s` folder) are both
supported; where neither is writable (not root, a locked-down container) there is none,
and the sandbox falls back to rlimits. The memory limit itself is set by the zygote for
each job (`Jail.set_memory_cap`), since each job says how much memory it may use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("w4s.sandbox")

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupBase:
    """Where worker cgroups are made: version, {controller: base folder}, and the folder a
    zygote moves itself to before removing its own (v2 forbids processes in inner nodes)."""

    version: int
    bases: dict[str, str]
    exit_dirs: dict[str, str]

    @property
    def has_memory(self) -> bool:
        return "memory" in self.bases

    def config(self, name: str) -> dict:
        """The zygote's view of worker `name`: [[folder, exit folder], ...] and the kinds."""
        return {
            "version": self.version,
            "dirs": {k: os.path.join(b, name) for k, b in self.bases.items()},
            "exit_dirs": dict(self.exit_dirs),
        }


def detect() -> CgroupBase | None:
    """The writable hierarchy w4s can make worker cgroups in (pruned of stale ones)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return None
    controllers = ROOT / "cgroup.controllers"
    if controllers.is_file():
        return _detect_v2(controllers)
    bases, exits = {}, {}
    for kind in ("pids", "memory"):
        top = ROOT / kind
        if top.is_dir() and os.access(top, os.W_OK):
            base = top / "w4s"
            try:
                base.mkdir(exist_ok=True)
            except OSError:
                continue
            prune(base)
            bases[kind], exits[kind] = str(base), str(base)
    if "pids" not in bases:  # the process cap is what the level needs; memory is extra
        return None
    return CgroupBase(1, bases, exits)


def _detect_v2(controllers: Path) -> CgroupBase | None:
    try:
        available = set(controllers.read_text().split())
        if "pids" not in available:
            return None
        wanted = [k for k in ("pids", "memory") if k in available]
        base = ROOT / "w4s"
        base.mkdir(exist_ok=True)
        for parent in (ROOT, base):
            (parent / "cgroup.subtree_control").write_text(" ".join("+" + k for k in wanted))
    except OSError as e:
        log.debug("cgroup v2 not usable: %s", e)
        return None
    prune(base)
    return CgroupBase(2, {k: str(base) for k in wanted}, {k: str(ROOT) for k in wanted})


def prune(base: Path) -> None:
    """Remove empty worker cgroups left by processes that died without cleaning up."""
    with contextlib.suppress(OSError):
        for d in base.iterdir():
            owner = d.name.split("-")[0]
            if d.is_dir() and owner.isdigit() and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(OSError):
                    d.rmdir()


def create(base: CgroupBase, name: str, pids_max: int) -> dict | None:
    """Make worker `name`'s cgroups (None, logged, when that fails): its config for the
    zygote, which joins them so that every job process is born inside."""
    cfg = base.config(name)
    made: list[str] = []
    try:
        for path in dict.fromkeys(cfg["dirs"].values()):
            os.mkdir(path)
            made.append(path)
        Path(cfg["dirs"]["pids"], "pids.max").write_text(str(pids_max))
    except OSError as e:
        log.warning("no cgroup for sandbox worker (%s); relying on rlimits", e)
        remove(made)
        return None
    return cfg


def kill(path: str) -> None:
    """SIGKILL every process in the cgroup at `path` until it is empty (bounded)."""
    procs = Path(path, "cgroup.procs")
    for _ in range(100):
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.01)


def remove(paths: list[str]) -> None:
    """Kill what is left in each cgroup, then remove it (already gone is fine)."""
    for path in paths:
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                kill(path)
                time.sleep(0.02)
