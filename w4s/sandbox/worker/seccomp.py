"""A seccomp filter that denies new unix-domain sockets (and io_uring, which could make one
without the socket() system call) to a jailed job.

Landlock does not cover connect() to a pathname unix socket, and a host may listen on one
that the job can reach (a D-Bus or Docker socket, anything mode 777 under /var/tmp). A job
needs no unix socket of its own: its channel to the parent is a socketpair made before the
jail, and socketpair() stays allowed (connected pairs reach nobody). Architectures other
than x86_64 and aarch64 get no filter (`seccomp_supported` says so).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

from .libc import PR_SET_NO_NEW_PRIVS, get_libc

PR_GET_SECCOMP, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 21, 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
_X32_BIT = 0x40000000
AF_UNIX = 1
# machine: (AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup)
_ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}


def _program(arch: int, nr_socket: int, nr_io_uring_setup: int, x32: bool) -> bytes:
    deny = _RET_ERRNO | errno.EACCES
    ops = [
        (_LD_ABS, 0, 0, 4),                         # 0: A = arch
        (_JEQ, 0, 7, arch),                         # 1: another ABI (i386 int 0x80) -> 9
        (_LD_ABS, 0, 0, 0),                         # 2: A = syscall number
        (_JGE, 5, 0, _X32_BIT if x32 else 0xFFFFFFFF),  # 3: x32 ABI -> 9
        (_JEQ, 4, 0, nr_io_uring_setup),            # 4: io_uring -> 9
        (_JEQ, 0, 2, nr_socket),                    # 5: not socket() -> 8
        (_LD_ABS, 0, 0, 16),                        # 6: A = low word of args[0], the family
        (_JEQ, 1, 0, AF_UNIX),                      # 7: AF_UNIX -> 9
        (_RET, 0, 0, _RET_ALLOW),                   # 8
        (_RET, 0, 0, deny),                         # 9
    ]
    return b"".join(struct.pack("=HBBI", *op) for op in ops)


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class UnixSocketFilter:
    """Built once by the zygote; `apply` in each job (irreversible, inherited by forks)."""

    def __init__(self) -> None:
        spec = _ARCHES.get(platform.machine())
        self.supported = spec is not None and get_libc().prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0
        self._code = ctypes.create_string_buffer(
            _program(*spec, x32=platform.machine() == "x86_64") if spec else b"")
        self._prog = _Fprog(len(self._code.raw) // 8, ctypes.addressof(self._code))

    def apply(self) -> None:
        libc = get_libc()
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS) failed")
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter could not be installed")
