"""The local sessions' seccomp filter: its verdicts for both ABIs read off the BPF program
itself (an interpreter of the few instructions it uses), and the real kernel applying it."""

from __future__ import annotations

import errno
import struct
import subprocess
import sys

import pytest

from visa.clouds import seccomp

I386 = 0x40000003
DENY = seccomp.RET_ERRNO | errno.EPERM


def _run(program: bytes, nr: int, arch: int, *args: int) -> int:
    """Classic BPF over a ``struct seccomp_data``: the return value of the filter."""
    args6 = (list(args) + [0] * 6)[:6]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args6)
    code = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if taken else jf


@pytest.mark.parametrize(("arch", "abi"), [(seccomp.AUDIT_ARCH_X86_64, 0), (seccomp.AUDIT_ARCH_AARCH64, 1)])
def test_the_filter_denies_the_listed_calls_on_both_abis(arch: int, abi: int) -> None:
    program = seccomp.program()
    for name, numbers in seccomp.DENIED.items():
        if numbers[abi] is not None:
            assert _run(program, numbers[abi], arch) == DENY, name  # type: ignore[arg-type]
    ioctl, clone, unshare, clone3 = (seccomp.IOCTL[abi], seccomp.CLONE[abi], seccomp.UNSHARE[abi],
                                     seccomp.CLONE3[abi])  # fmt: skip
    for request in (seccomp.TIOCSTI, seccomp.TIOCLINUX, seccomp.TIOCSTI | 1 << 32):
        assert _run(program, ioctl, arch, 0, request) == DENY  # the kernel ignores the high half
    assert _run(program, ioctl, arch, 0, 0x5413) == seccomp.RET_ALLOW  # TIOCGWINSZ
    for call in (clone, unshare):
        assert _run(program, call, arch, seccomp.CLONE_NEWUSER | 0x11) == DENY
        assert _run(program, call, arch, 0x00010000 | 0x20000000) == seccomp.RET_ALLOW  # thread, new uts
    assert _run(program, clone3, arch) == seccomp.RET_ERRNO | errno.ENOSYS
    for ordinary in (0, 1, 2, 3, 59, 63, 221, 257):  # read, write, open(at), execve...
        assert _run(program, ordinary, arch) == seccomp.RET_ALLOW


def test_other_abis_are_denied_whole() -> None:
    program = seccomp.program()
    assert _run(program, 20, I386) == DENY  # getpid of i386 (int 0x80)
    assert _run(program, 39 | seccomp.X32_SYSCALL_BIT, seccomp.AUDIT_ARCH_X86_64) == DENY  # x32 getpid
    assert _run(program, 39, seccomp.AUDIT_ARCH_X86_64) == seccomp.RET_ALLOW


PROBE = r"""
import ctypes, errno, fcntl, subprocess, termios, threading
libc = ctypes.CDLL(None, use_errno=True)
nrs = {"x86_64": (250, 321, 298), "aarch64": (219, 280, 241)}[__import__("os").uname().machine]
for name, nr in zip(("keyctl", "bpf", "perf_event_open"), nrs):
    ret = libc.syscall(nr, ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(-1), ctypes.c_long(-1))
    print(name, errno.errorcode.get(ctypes.get_errno(), "?") if ret == -1 else "ALLOWED")
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("TIOCSTI ALLOWED")
except OSError as exc:
    print("TIOCSTI", errno.errorcode[exc.errno])
done = subprocess.run(["unshare", "-Ur", "true"], capture_output=True)
print("userns", "ALLOWED" if done.returncode == 0 else ("EPERM" if b"not permitted" in done.stderr else done.stderr))
worker = threading.Thread(target=print, args=("thread ok",))
worker.start()
worker.join()
"""


def test_the_kernel_applies_the_filter_to_a_program_and_its_children(tmp_path: object) -> None:
    path = f"{tmp_path}/filter.bpf"
    seccomp.write(path)
    done = subprocess.run([sys.executable, "-I", seccomp.__file__, path, "--", sys.executable, "-c", PROBE],
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split("\n") == [
        "keyctl EPERM", "bpf EPERM", "perf_event_open EPERM", "TIOCSTI EPERM", "userns EPERM", "thread ok", "",
    ]  # fmt: skip
    # Without it, the same probe reaches the kernel (so the EPERMs above are the filter's).
    bare = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, stdin=subprocess.DEVNULL, timeout=60
    )
    assert "keyctl EINVAL" in bare.stdout.decode() and "TIOCSTI ENOTTY" in bare.stdout.decode()
