"""The seccomp filter of local sessions, of the container runtimes' kind, in classic BPF.

Every process of a sandboxed session runs under it: bwrap loads it (``--seccomp FD``) for the
session's programs, and commands visa runs inside a session later are started through this
module as a script (``python -I seccomp.py FILTER -- argv``), which installs it and execs.

Denied with EPERM, on x86_64 and aarch64 (any other ABI, i386 and x32 included, is denied
outright):

* the kernel's keyrings (``keyctl``, ``add_key``, ``request_key``), ``bpf``, ``userfaultfd``,
  ``perf_event_open`` and ``io_uring``: large kernel surfaces a desktop never needs;
* new user namespaces (``unshare`` and ``clone`` with ``CLONE_NEWUSER``; ``clone3``, whose
  flags a filter cannot read, answers ENOSYS so that the C library falls back to ``clone``);
* loading kernels and modules, mounting, swap, reboot, accounting, ``open_by_handle_at``,
  port I/O: already refused without capabilities, refused here too;
* the ``TIOCSTI`` and ``TIOCLINUX`` ioctls, which type into a terminal another process reads.

Stdlib only: the script runs with ``-I``, without visa on its path.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000

# Classic BPF opcodes.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian).
_NR, _ARCH = 0, 4


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of an argument: the kernel reads flags and ioctl requests
    as 32-bit values, so the high half must not decide."""
    return 16 + 8 * index


# Denied outright: (x86_64 number, aarch64 number); None where the ABI has no such call.
DENIED: dict[str, tuple[int | None, int | None]] = {
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "userfaultfd": (323, 282),
    "perf_event_open": (298, 241),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "open_by_handle_at": (304, 265),
    "lookup_dcookie": (212, 18),
    "iopl": (172, None),
    "ioperm": (173, None),
}
# Allowed unless an argument says otherwise.
IOCTL = (16, 29)
CLONE = (56, 220)
UNSHARE = (272, 97)
CLONE3 = (435, 435)


class _Asm:
    """Instructions with symbolic jump targets, resolved to classic BPF's 8-bit offsets."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | None, str | None, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def op(self, code: int, k: int, jt: str | None = None, jf: str | None = None) -> None:
        self.code.append((code, jt, jf, k))

    def assemble(self) -> bytes:
        out = b""
        for at, (code, jt, jf, k) in enumerate(self.code):
            offsets = []
            for target in (jt, jf):
                offset = 0 if target is None else self.labels[target] - at - 1
                if not 0 <= offset <= 255:
                    raise ValueError(f"jump to {target} out of range")
                offsets.append(offset)
            out += struct.pack("=HBBI", code, offsets[0], offsets[1], k)
        return out


def _table(asm: _Asm, abi: int, prefix: str) -> None:
    """The checks of one ABI, the syscall number already loaded."""
    asm.op(_JEQ_K, IOCTL[abi], jt=f"{prefix}ioctl")
    asm.op(_JEQ_K, CLONE[abi], jt=f"{prefix}flags")
    asm.op(_JEQ_K, UNSHARE[abi], jt=f"{prefix}flags")
    asm.op(_JEQ_K, CLONE3[abi], jt="enosys")
    for numbers in DENIED.values():
        if numbers[abi] is not None:
            asm.op(_JEQ_K, numbers[abi], jt="deny")  # type: ignore[arg-type]
    asm.op(_RET_K, RET_ALLOW)
    asm.label(f"{prefix}ioctl")
    asm.op(_LD_W_ABS, _arg_low(1))
    asm.op(_JEQ_K, TIOCSTI, jt="deny")
    asm.op(_JEQ_K, TIOCLINUX, jt="deny")
    asm.op(_RET_K, RET_ALLOW)
    asm.label(f"{prefix}flags")
    asm.op(_LD_W_ABS, _arg_low(0))
    asm.op(_JSET_K, CLONE_NEWUSER, jt="deny")
    asm.op(_RET_K, RET_ALLOW)


def program() -> bytes:
    """The filter as ``struct sock_filter`` records, ready for bwrap or ``install``."""
    asm = _Asm()
    asm.op(_LD_W_ABS, _ARCH)
    asm.op(_JEQ_K, AUDIT_ARCH_X86_64, jt="x86_64")
    asm.op(_JEQ_K, AUDIT_ARCH_AARCH64, jt="aarch64")
    asm.op(_RET_K, RET_ERRNO | errno.EPERM)  # i386, arm32 and any other ABI
    asm.label("x86_64")
    asm.op(_LD_W_ABS, _NR)
    asm.op(_JGE_K, X32_SYSCALL_BIT, jt="deny")
    _table(asm, 0, "x86_64_")
    asm.label("aarch64")
    asm.op(_LD_W_ABS, _NR)
    _table(asm, 1, "aarch64_")
    asm.label("deny")
    asm.op(_RET_K, RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.op(_RET_K, RET_ERRNO | errno.ENOSYS)
    return asm.assemble()


def write(path: str) -> None:
    """The filter into a file (visa's, never the session's) for bwrap and for ``run``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(program())


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(filter_: bytes) -> None:
    """Apply the filter to this process and all it execs (with ``no_new_privs``, which it needs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    buffer = ctypes.create_string_buffer(filter_, len(filter_))
    prog = _SockFprog(len(filter_) // 8, ctypes.addressof(buffer))
    ulong = ctypes.c_ulong
    if libc.prctl(pr_set_no_new_privs, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(pr_set_seccomp, ulong(seccomp_mode_filter), ctypes.byref(prog), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> int:
    """``seccomp.py FILTER -- PROGRAM ARGS...``: exec the program under the filter."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: seccomp.py FILTER -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as source:
        filter_ = source.read()
    install(filter_)
    os.execvp(argv[3], argv[3:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
