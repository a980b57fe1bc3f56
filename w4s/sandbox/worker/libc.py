"""The C library through ctypes, loaded on first use: Landlock, mount and prctl calls."""

from __future__ import annotations

import ctypes

PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2  # umount2: detach now, free once unused

_libc = None


def get_libc():
    """The C library the interpreter is linked with (dlopen(NULL)): no `ctypes.util`,
    whose `find_library` runs ldconfig and imports `subprocess` and with it `threading`
    (an after-fork hook every forked job would run, see `zygote.ITEM_MODULES`)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc
