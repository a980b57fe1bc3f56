"""What a jailed job may read once Landlock confines reads: the interpreter, not the host.

A workflow (or a HumanEval/MBPP test program) legitimately imports the standard library
and site-packages, and extension modules load system shared libraries lazily; nothing
else on the host is its business: not /var/tmp, not the user's files, and not the
checkout, even though an editable install puts it on the import path (the zygote has
imported its own code before any job runs). Everything here is world-readable system
or interpreter data; the job's own folder is added by the ruleset.
"""

from __future__ import annotations

import os
import sys

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


def readable_paths(*, own_proc: bool) -> list[str]:
    """Paths a job may read; /proc only when the worker mounted its own (a PID namespace
    where it is init): there it lists just the worker's processes."""
    paths = [*interpreter_paths(), *SYSTEM_LIBRARIES, *SYSTEM_DATA]
    if own_proc:
        paths.append("/proc")
    paths = [p for p in paths if os.path.exists(p)]
    return [p for p in paths if not any(q != p and within(p, q) for q in paths)]
