"""Launching sandboxed children: a warm fork server, or (baseline) a fresh interpreter each time.

The fork server is a separate process that imports torch once and then forks a child per
session on request.  The parent hands it one end of a fresh socket pair (SCM_RIGHTS) and then
talks to the child directly; the server never sees candidate code or data.

Each child: its own session and process group, a scratch working directory, stdout/stderr to a
size-capped file, RLIMIT_AS / CPU / FSIZE / CORE / NPROC, pinned CPUs where asked.  When the
parent runs as root, every child also drops to a uid of its own (no other process has it), which
makes RLIMIT_NPROC effective (root ignores it), keeps the candidate away from files and processes
of the user, and lets ``finish`` kill every process the candidate started, even ones that
escaped the process group, by sending SIGKILL to that whole uid.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vegtts.evaluate.sandbox import isolate_network, setup_child_process

log = logging.getLogger(__name__)

_SRC_ROOT = str(Path(__file__).resolve().parents[2])  # .../src, so children import this vegtts
_PR_SET_CHILD_SUBREAPER = 36


def _uid_processes(uid: int) -> list[int]:
    """Pids of live (not zombie) processes that run as `uid`, from the owners of /proc entries."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def _kill_child(pid: int, uid: int) -> None:
    """SIGKILL a child's process group, then anything left under its private uid (-1: none)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if uid >= 0:
        _kill_uid(uid, pid)


def _kill_uid(uid: int, child_pid: int) -> None:
    """SIGKILL every process running as `uid` (the child's own uid) besides the child itself.

    The common case (nothing escaped the process group) costs one scan of /proc.  Otherwise a
    helper becomes `uid` and signals -1, which reaches every process of the uid at once, so a
    fork racing the sweep cannot escape; repeated until the scan comes back empty.
    """
    if not [p for p in _uid_processes(uid) if p != child_pid]:
        return
    for _ in range(50):
        helper = os.fork()
        if helper == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)  # Linux never signals the caller itself
            finally:
                os._exit(0)
        os.waitpid(helper, 0)
        time.sleep(0.002)
        if not [p for p in _uid_processes(uid) if p != child_pid]:
            return
    log.warning("processes of sandbox uid %d survived the sweep", uid)



# ----------------------------------------------------------------------------- server process


# Imported once in the server so children have them: a child runs as its own uid and may be
# unable to read the interpreter's files (e.g. a Python under /root), so a module first imported
# by a candidate could fail to load.
PRELOAD_MODULES = (
    "math", "cmath", "functools", "itertools", "operator", "collections", "typing", "dataclasses",
    "numpy", "torch.nn.functional", "torch.fft", "torch.linalg", "torch.overrides", "weakref",
    "encodings.idna", "contextlib", "warnings",
)


def _preload_modules() -> None:
    import importlib

    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def serve(fd: int) -> None:
    """Main loop of the fork server process (started by ForkServer)."""
    sock = socket.socket(fileno=fd)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans come to us to be reaped
    except (OSError, AttributeError):
        pass
    network_isolated = isolate_network()
    import torch

    torch.set_num_threads(1)  # never start an OpenMP pool here: forked children could not use it
    torch.ones(8).add_(1)  # touch the allocator and dispatcher once so children start warm
    import vegtts.evaluate.child  # noqa: F401 - preloaded for the children

    _preload_modules()

    is_root = os.geteuid() == 0
    uid_base = 1_000_000_000 + (os.getpid() % 100_000) * 10_000
    counter = 0
    statuses: dict[int, int] = {}
    live: dict[int, int] = {}  # pid -> uid
    sock.send(json.dumps({"ready": True, "pid": os.getpid(), "network_isolated": network_isolated}).encode())

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in live:
                statuses[pid] = status  # kept for a later finish; children finished early are just reaped

    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        except OSError:
            data, fds = b"", []
        if not data:
            break
        request = json.loads(data)
        reap()
        if request["op"] == "fork":
            counter += 1
            config = dict(request["config"])
            config["uid"] = uid_base + counter % 10_000 if is_root else None
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    sock.close()
                    confinement = setup_child_process(config)
                    from vegtts.evaluate.child import child_main

                    child_main(socket.socket(fileno=fds[0]), confinement)
                    code = 0
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            for f in fds:
                os.close(f)
            live[pid] = config["uid"] if config["uid"] is not None else -1
            sock.send(json.dumps({"pid": pid}).encode())
        elif request["op"] == "finish":
            pid = int(request["pid"])
            _kill_child(pid, live.pop(pid, -1))
            if pid not in statuses:
                try:
                    # a killed child's teardown is the kernel's business: wait for it only when
                    # the caller needs the real exit status (a child that died on its own)
                    got, status = os.waitpid(pid, 0 if request.get("wait", True) else os.WNOHANG)
                    statuses[pid] = status if got else -1
                except ChildProcessError:
                    statuses[pid] = -1
            sock.send(json.dumps({"status": statuses.pop(pid)}).encode())
            reap()
    for pid, uid in live.items():
        _kill_child(pid, uid)


# ----------------------------------------------------------------------------- parent side


class Launcher(Protocol):
    def launch(self, config: dict[str, Any]) -> tuple[int, socket.socket]: ...

    def finish(self, pid: int, wait: bool = True) -> int: ...

    def close(self) -> None: ...


# glibc backs its heap with transparent huge pages (madvise; THP "madvise" or "always" mode).
# Tensors come from the heap (steady_malloc), and fragmentation lets a heap grow for a while: a
# fresh child then took ~10^4 first-touch page faults inside its timed calls (the long-lived
# reference child had already grown its heap), which on a VM, where a fault is expensive, made an
# A/A candidate ~11% slower.  With 2 MB pages that growth costs a few faults, on both sides.
HEAP_TUNABLE = "glibc.malloc.hugetlb=1"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_SRC_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONHASHSEED"] = "0"
    # a thread the candidate starts would size its OpenMP team by the host (cores or the user's
    # OMP_NUM_THREADS) and, past the child's RLIMIT_NPROC, libgomp aborts the child: the verdict
    # would depend on the machine.  The child's main thread still runs `threads` (set_num_threads).
    env["OMP_NUM_THREADS"] = "1"
    env["GLIBC_TUNABLES"] = ":".join([t for t in env.get("GLIBC_TUNABLES", "").split(":") if t] + [HEAP_TUNABLE])
    return env


class ForkServer:
    """Client of a warm fork server process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from vegtts.evaluate.server import serve; serve(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=_child_env(),
            close_fds=True,
        )
        theirs.close()
        reply = self._sock.recv(1 << 16)
        if not reply:
            raise RuntimeError("the evaluator's fork server failed to start (see its stderr)")
        info = json.loads(reply)
        self.network_isolated = bool(info.get("network_isolated"))
        log.debug("fork server ready: %s", info)

    def _request(self, obj: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        with self._lock:
            socket.send_fds(self._sock, [json.dumps(obj).encode()], fds or [])
            reply = self._sock.recv(1 << 16)
        if not reply:
            raise RuntimeError("the evaluator's fork server died")
        return json.loads(reply)

    def launch(self, config: dict[str, Any]) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            reply = self._request({"op": "fork", "config": config}, [theirs.fileno()])
        finally:
            theirs.close()
        return int(reply["pid"]), ours

    def finish(self, pid: int, wait: bool = True) -> int:
        """Kill the child and everything it started; its wait() status if `wait`, else maybe -1."""
        if self._sock.fileno() < 0:
            return -1  # closed: the server killed every child it still had when it exited
        return int(self._request({"op": "finish", "pid": pid, "wait": wait})["status"])

    def pin(self, cpus: list[int] | None) -> None:
        """Keep the server on `cpus` (None: every cpu); children then move to their own cpus."""
        try:
            os.sched_setaffinity(self._proc.pid, cpus or os.sched_getaffinity(0))
        except OSError:
            pass

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        try:
            self._sock.close()
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()


class SpawnLauncher:
    """A fresh `python -c` interpreter per child: the slow baseline the fork server replaces."""

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen] = {}
        self._uids: dict[int, int] = {}
        self._counter = 0
        self._lock = threading.Lock()

    def launch(self, config: dict[str, Any]) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self._lock:
            self._counter += 1
            uid = 1_000_000_000 + ((os.getpid() % 100_000) * 10_000 + 5_000 + self._counter % 5_000)
        env = _child_env()
        env["VEGTTS_CHILD_CONFIG"] = json.dumps({**config, "uid": uid if os.geteuid() == 0 else None})
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from vegtts.evaluate.child import spawn_main; spawn_main(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            close_fds=True,
        )
        theirs.close()
        self._procs[proc.pid] = proc
        if os.geteuid() == 0:
            self._uids[proc.pid] = uid
        return proc.pid, ours

    def finish(self, pid: int, wait: bool = True) -> int:
        proc = self._procs.pop(pid, None)
        if proc is None:
            return -1  # already finished (close() ends every child)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        uid = self._uids.pop(pid, None)
        if uid is not None:
            _kill_uid(uid, pid)
        proc.wait()
        rc = proc.returncode
        return (-rc) & 0x7F if rc < 0 else (rc & 0xFF) << 8  # back to a wait() status

    def close(self) -> None:
        for pid in list(self._procs):
            self.finish(pid)


@dataclass
class _Shared:
    server: ForkServer | None = None


_shared = _Shared()
_shared_lock = threading.Lock()


def shared_fork_server() -> ForkServer:
    """One warm fork server per parent process, started on first use."""
    with _shared_lock:
        if _shared.server is None or not _shared.server.alive():
            _shared.server = ForkServer()
            import atexit

            atexit.register(_shared.server.close)
        return _shared.server
