"""Kernel-level confinement of a child and the parent's view into it (Linux).

- ``setup_child_process``: what a child does to itself before any candidate code runs (its own
  session, stdout/stderr to a capped file, resource limits, a uid of its own when the parent is
  root, the two confinements below); ``isolate_network``: the fork server's empty network
  namespace, which every child inherits.
- ``private_tmp``: the child gets its own mount namespace with fresh tmpfs mounts over every
  world-writable directory (``/tmp``, ``/dev/shm``, ``/var/tmp``, ``/run/lock``), so nothing one
  candidate writes there survives it or reaches another candidate (needs root, before the uid
  drop).
- ``no_new_processes``: a seccomp filter that makes process creation and inter-process channels
  fail: ``fork``/``vfork``, ``clone`` without ``CLONE_THREAD``, ``clone3`` (ENOSYS, so glibc falls
  back to ``clone`` for threads), ``execve``, new sockets, System V / POSIX IPC, ptrace and
  cross-process memory access, namespaces and mounts, ``io_uring``, ``userfaultfd``, ``bpf``,
  ``perf_event_open`` and ``sched_setaffinity`` (the parent pins the child from outside).
  Threads stay allowed; their CPU is the process's, which the parent charges.
- ``read_memory``: the parent reads bytes of a child's address space (``process_vm_readv``), so
  an output check runs no code in the child; ``process_cpu_clock``: the child's CPU clock.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import resource
import signal
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- seccomp

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_CLONE_THREAD = 0x00010000

# (audit arch, x32 bit or 0, syscall numbers by name); names missing on an arch are skipped
_ARCHES = {
    "x86_64": (0xC000003E, 0x40000000, {
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone": 56, "clone3": 435,
        "socket": 41, "socketpair": 53, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "io_uring_setup": 425,
        "userfaultfd": 323, "bpf": 321, "perf_event_open": 298, "sched_setaffinity": 203,
    }),
    "aarch64": (0xC00000B7, 0, {
        "execve": 221, "execveat": 281, "clone": 220, "clone3": 435, "socket": 198, "socketpair": 199,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "shmget": 194, "semget": 190,
        "msgget": 186, "mq_open": 180, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "io_uring_setup": 425, "userfaultfd": 282, "bpf": 280,
        "perf_event_open": 241, "sched_setaffinity": 122,
    }),
}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_program(machine: str | None = None) -> bytes | None:
    """The BPF filter as bytes (sock_filter array), or None for an architecture we have no table for."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, x32_bit, numbers = arch
    ld_w_abs, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    deny = _RET_ERRNO | errno.EPERM
    denied = [nr for name, nr in numbers.items() if name not in ("clone", "clone3")]
    # layout: [arch check][load nr][x32 check][denied...][clone3][clone][allow][deny][enosys][clone body]
    body: list[tuple[str, int]] = []  # (kind, value); jumps are resolved below
    body.append(("ld", 4))  # seccomp_data.arch
    body.append(("jne_deny", audit_arch))
    body.append(("ld", 0))  # seccomp_data.nr
    if x32_bit:
        body.append(("jge_deny", x32_bit))
    for nr in denied:
        body.append(("jeq_deny", nr))
    body.append(("jeq_enosys", numbers["clone3"]))
    body.append(("jeq_clone", numbers["clone"]))
    body.append(("ret", _RET_ALLOW))
    n_head = len(body)
    deny_at, enosys_at, clone_at = n_head, n_head + 1, n_head + 2
    prog = []
    for i, (kind, value) in enumerate(body):
        rel = lambda target, i=i: target - i - 1  # noqa: E731 - jump offsets count from the next insn
        if kind == "ld":
            prog.append(_insn(ld_w_abs, 0, 0, value))
        elif kind == "jne_deny":
            prog.append(_insn(jeq, 0, rel(deny_at), value))
        elif kind == "jge_deny":
            prog.append(_insn(jge, rel(deny_at), 0, value))
        elif kind == "jeq_deny":
            prog.append(_insn(jeq, rel(deny_at), 0, value))
        elif kind == "jeq_enosys":
            prog.append(_insn(jeq, rel(enosys_at), 0, value))
        elif kind == "jeq_clone":
            prog.append(_insn(jeq, rel(clone_at), 0, value))
        else:
            prog.append(_insn(ret, 0, 0, value))
    prog.append(_insn(ret, 0, 0, deny))  # deny_at
    prog.append(_insn(ret, 0, 0, _RET_ERRNO | errno.ENOSYS))  # enosys_at
    # clone: flags are the first argument (seccomp_data.args[0], low word at offset 16)
    prog.append(_insn(ld_w_abs, 0, 0, 16))
    prog.append(_insn(jset, 0, 1, _CLONE_THREAD))
    prog.append(_insn(ret, 0, 0, _RET_ALLOW))
    prog.append(_insn(ret, 0, 0, deny))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def no_new_processes() -> bool:
    """Install the filter in this process (inherited by its threads); False where unsupported."""
    code = seccomp_program()
    if code is None:
        log.warning("no seccomp table for %s: process creation is not blocked in children", platform.machine())
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(code, len(code))
        prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------- private writable dirs

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 1 << 18
WRITABLE_DIRS = ("/tmp", "/dev/shm", "/var/tmp", "/run/lock")


def private_tmp(uid: int | None, size_mb: int) -> list[str]:
    """A mount namespace of this process's own with a fresh tmpfs on each world-writable dir.

    Needs CAP_SYS_ADMIN (root, before dropping the uid).  Returns the directories covered
    (empty where the namespace could not be made).  The tmpfs belong to `uid` (mode 0700 for
    /tmp, 1777 elsewhere) and vanish with the namespace, i.e. with the child.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNS) != 0:
            return []
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            return []
        done = []
        for path in WRITABLE_DIRS:
            if not os.path.isdir(path):
                continue
            owner = f",uid={uid},gid={uid}" if uid is not None else ""
            opts = f"size={size_mb}m,mode={'0700' if path == '/tmp' else '1777'}{owner}".encode()
            if libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts) == 0:
                done.append(path)
        return done
    except (OSError, AttributeError):
        return []


# ----------------------------------------------------------------------------- setting a child up

STDIO_CAP_BYTES = 16 << 20  # RLIMIT_FSIZE of a child: its stdout/stderr file cannot grow past this


def vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _user_process_count(uid: int) -> int:
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    count += int(line.split()[1]) == uid
                    break
        except OSError:
            continue
    return count


class CappedOutput:
    """sys.stdout/stderr of a child: writes to fd 1 until `cap` bytes, then silently drops."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.cap, self.written = fd, cap, 0
        self.encoding = "utf-8"

    def write(self, text: str) -> int:
        if self.written < self.cap:
            data = str(text).encode("utf-8", "replace")[: self.cap - self.written]
            try:
                os.write(self.fd, data)
            except OSError:
                self.written = self.cap
            self.written += len(data)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def steady_malloc() -> None:
    """Make glibc serve big tensors from the heap and keep freed memory.

    By default glibc maps each large block afresh (page faults on every new output tensor) until
    a free raises its threshold, so a child's speed depends on its allocation history: a fresh
    child and a reused one would time the same code differently.  Fixed thresholds make every
    child reuse freed blocks from the first repeat on.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def setup_child_process(config: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child before any candidate code: isolate, limit, drop privileges.

    Returns what confinement took effect: {"private_dirs": [...], "seccomp": bool}.
    """
    os.setsid()
    steady_malloc()
    stdio = os.open(config["stdio"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdio, 1)
    os.dup2(stdio, 2)
    os.close(stdio)
    os.close(devnull)
    sys.stdout = sys.stderr = CappedOutput(1, STDIO_CAP_BYTES // 4)  # type: ignore[assignment]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails instead of killing
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if config.get("affinity"):
        try:
            os.sched_setaffinity(0, config["affinity"])
        except OSError:
            pass
    threads = int(config["threads"])
    # glibc reserves a malloc arena and a stack per thread: give extra threads their address space
    address_space = vm_size_bytes() + int(config["memory_limit_mb"]) * (1 << 20) + threads * (80 << 20)
    limits = {
        resource.RLIMIT_AS: address_space,
        resource.RLIMIT_CPU: int(config["cpu_s"]),
        resource.RLIMIT_FSIZE: STDIO_CAP_BYTES,
        resource.RLIMIT_CORE: 0,
    }
    uid = config.get("uid")
    private_dirs: list[str] = []
    if uid is not None and os.geteuid() == 0:
        os.chown(config["scratch"], uid, uid)
        limits[resource.RLIMIT_NPROC] = threads + 4  # counts threads; the child's uid is its own
        # its own /tmp, /dev/shm, ...: nothing it writes there outlives it or reaches another child
        private_dirs = private_tmp(uid, max(64, int(config["memory_limit_mb"]) // 2))
    else:
        limits[resource.RLIMIT_NPROC] = _user_process_count(os.getuid()) + threads + 16
    for what, value in limits.items():
        soft_hard = (value, value + 5) if what == resource.RLIMIT_CPU else (value, value)
        try:
            resource.setrlimit(what, soft_hard)
        except (ValueError, OSError):
            resource.setrlimit(what, (value, resource.getrlimit(what)[1]))
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    home = "/tmp" if "/tmp" in private_dirs else config["scratch"]
    os.chdir(home)
    os.environ.update({"HOME": home, "TMPDIR": home})
    import torch

    torch.set_num_threads(threads)
    return {"private_dirs": private_dirs, "seccomp": no_new_processes()}


_CLONE_NEWNET = 0x40000000


def isolate_network() -> bool:
    """Move this process into a new, empty network namespace (only a down loopback).

    Needs CAP_SYS_ADMIN (root here); returns False where the OS does not allow it.  Children
    forked afterwards inherit the namespace, so they cannot open any network connection
    (not even to 127.0.0.1 of the host); unix sockets in the filesystem are not covered.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(_CLONE_NEWNET) == 0
    except (OSError, AttributeError):
        return False


# ----------------------------------------------------------------------------- the parent's view into a child


_IOV_MAX = 1024
_libc: ctypes.CDLL | None = None


def read_memory(pid: int, iov: np.ndarray) -> bytes | None:
    """Bytes of process `pid` at the (address, length) rows of `iov` (uint64, shape (n, 2), the
    layout of struct iovec), concatenated in row order; None if any byte could not be read
    (unmapped, PROT_NONE, the process is gone)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    import numpy as np

    iov = np.ascontiguousarray(iov, dtype=np.uint64)
    total = int(iov[:, 1].sum()) if len(iov) else 0
    out = ctypes.create_string_buffer(max(total, 1))
    done = 0
    for start in range(0, len(iov), _IOV_MAX):
        chunk = np.ascontiguousarray(iov[start:start + _IOV_MAX])
        size = int(chunk[:, 1].sum())
        local = (ctypes.c_uint64 * 2)(ctypes.addressof(out) + done, size)
        got = _libc.process_vm_readv(pid, local, 1, ctypes.c_void_p(chunk.ctypes.data), len(chunk), 0)
        if got != size:
            return None
        done += size
    return out.raw[:total]


def process_cpu_clock(pid: int) -> int | None:
    """The clock id of `pid`'s CPU time (all its threads, ns resolution), or None where unavailable."""
    try:
        clock = ctypes.c_int()
        if ctypes.CDLL(None).clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            return None
        time.clock_gettime_ns(clock.value)
        return clock.value
    except (OSError, AttributeError):
        return None
