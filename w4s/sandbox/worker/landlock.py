"""Landlock (Linux >= 5.13): an unprivileged, irreversible file-system and network policy.

A ruleset is built once per worker and enforced by each job (`landlock_restrict`); it
denies every handled access that no rule allows, for the job and all its descendants.
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
import sys
from collections.abc import Iterable

from .libc import PR_SET_NO_NEW_PRIVS, get_libc

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # same on x86_64 and aarch64
_FS_READ_FILE, _FS_READ_DIR = 1 << 2, 1 << 3
_FS_READ = _FS_READ_FILE | _FS_READ_DIR
_FS_WRITE_FILE, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 1, 1 << 14, 1 << 15
_FS_WRITE_V1 = (1 << 1) | sum(1 << b for b in range(4, 13))  # write/remove/make-*
_FS_REFER = 1 << 13
_NET_BIND_CONNECT_TCP = 0b11
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 0b11


def landlock_abi() -> int:
    """Landlock ABI version, 0 when unavailable (not Linux, old kernel, disabled, seccomp)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        abi = get_libc().syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (OSError, AttributeError):
        return 0
    return max(0, int(abi))


def _write_rights(abi: int) -> int:
    rights = _FS_WRITE_V1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def landlock_ruleset(abi: int, writable_dir: str, readable: Iterable[str] | None = None,
                     listable: Iterable[str] = ()) -> int:
    """A ruleset fd allowing file writes only beneath `writable_dir` (and to /dev/null).

    With `readable` (paths; missing ones are skipped), reads are confined too: only those
    paths, `writable_dir` and /dev/null can be read or listed, and the `listable` folders
    (and those beneath them) listed. Without it reads stay open.
    From ABI 4 it also denies TCP bind/connect, from ABI 6 signals and abstract unix
    sockets that leave the domain (so a workflow cannot signal the parent).
    """
    libc = get_libc()
    writes = _write_rights(abi)
    fs = writes | (_FS_READ if readable is not None else 0)
    fields = [fs]
    if abi >= 4:
        fields.append(_NET_BIND_CONNECT_TCP)
    if abi >= 6:
        fields.append(_SCOPE_ABSTRACT_UNIX_AND_SIGNAL)
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    fd = libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    file_only = _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
    rules = [(writable_dir, fs, True), ("/dev/null", fs & file_only, True)]
    rules += [(path, fs & _FS_READ, False) for path in readable or ()]
    rules += [(path, fs & _FS_READ_DIR, False) for path in listable if readable is not None]
    try:
        for path, rights, required in rules:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                if required:
                    raise
                continue
            try:
                if not stat.S_ISDIR(os.fstat(pfd).st_mode):
                    rights &= file_only  # a file rule may not carry directory rights
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
    libc = get_libc()
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_RESTRICT, ruleset_fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset_fd)
