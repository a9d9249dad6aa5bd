"""One sandboxed child as seen from the parent: requests with a deadline, failures as statuses."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vegtts.evaluate.protocol import Encoded, ProtocolError, recv_message, send_json, tune_socket
from vegtts.evaluate.server import Launcher

_OOM_MARKERS = ("MemoryError", "bad_alloc", "can't allocate memory", "Cannot allocate memory", "out of memory")
_TAIL_BYTES = 2000
SANDBOX_UID_MIN = 1_000_000_000  # children run as uids from here on (see server.py)


class ChildFailure(Exception):
    """The candidate's session ended in a non-ok status."""

    def __init__(self, status: str, error: str = "", guard: str = "") -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error
        self.guard = guard


def process_cpu_clock(pid: int) -> int | None:
    """The clock id of `pid`'s CPU time (all its threads, ns resolution), or None where unavailable."""
    try:
        import ctypes

        clock = ctypes.c_int()
        if ctypes.CDLL(None).clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            return None
        time.clock_gettime_ns(clock.value)
        return clock.value
    except (OSError, AttributeError):
        return None


@dataclass
class CpuUse:
    """CPU time a child used while the parent tracked it (see ChildSession.track_cpu)."""

    between_requests_ns: int = 0  # while it had no request to serve: work done in the background
    in_timed_ns: int = 0  # during its timed requests
    timed_wall_ns: int = 0  # wall time of those timed requests
    measured: bool = False  # False where the OS gives no per-process CPU clock


def encode_request(msg: dict[str, Any]) -> Encoded:
    """Encode a request with tensors once, to send it to many children."""
    return Encoded(msg)


class ChildSession:
    """A child forked for one session; always call close() (or use it as a context manager)."""

    def __init__(
        self,
        launcher: Launcher,
        *,
        threads: int,
        memory_limit_mb: int,
        timeout_s: float,
        affinity: list[int] | None = None,
        cpu_timeout_s: float | None = None,
    ) -> None:
        cpu_timeout_s = cpu_timeout_s or timeout_s
        self.scratch = Path(tempfile.mkdtemp(prefix="vegtts-eval-"))
        os.chmod(self.scratch, 0o700)
        self.stdio = self.scratch / "stdio.txt"
        self.timeout_s = timeout_s
        self.max_reply_bytes = (memory_limit_mb + 256) << 20
        config = {
            "scratch": str(self.scratch),
            "stdio": str(self.stdio),
            "threads": threads,
            "memory_limit_mb": memory_limit_mb,
            "cpu_s": int(cpu_timeout_s * threads) + 5,  # backstop if the parent itself dies
            "affinity": affinity,
        }
        self._launcher = launcher
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.pid, self.sock = launcher.launch(config)
        tune_socket(self.sock)
        self._closed = False
        self.exit_status: int | None = None
        self._cpu_clock = process_cpu_clock(self.pid)
        self.cpu: CpuUse | None = None  # set by track_cpu
        self._cpu_mark: int | None = None  # CPU time at the end of the last request

    def extend(self, timeout_s: float) -> None:
        """A fresh wall-clock budget from now (a session reused for a new phase or candidate)."""
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s

    def track_cpu(self) -> CpuUse:
        """Start counting this child's CPU time between and during its requests (fresh counters)."""
        self.cpu = CpuUse(measured=self._cpu_clock is not None)
        self._cpu_mark = None
        return self.cpu

    def _cpu_ns(self) -> int | None:
        if self.cpu is None or self._cpu_clock is None:
            return None
        try:
            return time.clock_gettime_ns(self._cpu_clock)
        except OSError:  # the child is gone
            return None

    def alive(self) -> bool:
        return not self._closed and not self._child_gone()

    def pin(self, cpus: list[int] | None) -> None:
        """Move every thread of the child onto `cpus` (the parent may do this; the child keeps them)."""
        if not cpus:
            return
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
        except OSError:
            return
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass

    def set_nice(self, value: int) -> bool:
        """Give every thread of the child the scheduling priority `value` (parent side; needs root
        to go below the current nice value).  False where the OS refused."""
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
        except OSError:
            return False
        done = True
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, value)
            except OSError:
                done = False
        return done

    def stray_processes(self) -> list[int]:
        """Live processes other than the child itself that run as the child's own sandbox uid.

        Only meaningful when children get uids of their own (the parent runs as root); a helper
        process left running could do work, or steal the cpu from the reference, off the clock.
        """
        try:
            uid = os.stat(f"/proc/{self.pid}").st_uid
        except OSError:
            return []
        if uid < SANDBOX_UID_MIN:
            return []
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self.pid:
                continue
            try:
                if entry.stat().st_uid != uid:
                    continue
                if Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
        return found

    def __enter__(self) -> "ChildSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests
    def request(self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None = None) -> dict[str, Any]:
        """Send a request (a JSON-able dict, or an Encoded message with tensors); return the ok reply.

        `after_send(sock)` runs right after the request is sent (it passes a file descriptor).
        """
        return self._tracked(msg, after_send, timed=False)[0]

    def timed_request(
        self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None = None
    ) -> tuple[dict[str, Any], int]:
        """A request whose round trip the parent times (ns): the clock lives here, not in the child."""
        return self._tracked(msg, after_send, timed=True)

    def _tracked(self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None,
                 timed: bool) -> tuple[dict[str, Any], int]:
        """One request; with CPU tracking on, the child's CPU clock is read outside the timed span."""
        before = self._cpu_ns()
        if before is not None and self.cpu is not None and self._cpu_mark is not None:
            self.cpu.between_requests_ns += before - self._cpu_mark
        t0 = time.perf_counter_ns()
        try:
            reply = self._exchange(msg, after_send)
        finally:
            ns = time.perf_counter_ns() - t0
            after = self._cpu_ns()
            if after is not None and self.cpu is not None:
                self._cpu_mark = after
                if timed and before is not None:
                    self.cpu.in_timed_ns += after - before
                    self.cpu.timed_wall_ns += ns
        return reply, ns

    def _exchange(self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None) -> dict[str, Any]:
        try:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            if isinstance(msg, Encoded):
                msg.send(self.sock)
            else:
                send_json(self.sock, msg)
            if after_send is not None:
                after_send(self.sock)
            self._wait_readable()
            reply = recv_message(self.sock, self.deadline, self.max_reply_bytes)
        except (TimeoutError, socket.timeout):
            raise self._fail("timeout", f"no reply within the {self.timeout_s:g} s limit") from None
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(exc) from None
        if not isinstance(reply, dict):
            raise self._fail("crash", "protocol violation: reply is not a mapping")
        if not reply.get("ok"):
            raise ChildFailure(str(reply.get("status", "crash")), str(reply.get("error", ""))[:2000], str(reply.get("guard", "")))
        return reply

    def _wait_readable(self) -> None:
        """Wait for the reply; notice a dead child even if a grandchild still holds its socket."""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            readable, _, _ = select.select([self.sock], [], [], min(remaining, 0.25))
            if readable:
                return
            if self._child_gone():
                raise EOFError("the child exited without replying")

    def _child_gone(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

    # -- failures
    def _fail(self, status: str, error: str) -> ChildFailure:
        self.close()
        return ChildFailure(status, error)

    def stdio_tail(self) -> str:
        try:
            with open(self.stdio, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _died(self, exc: BaseException) -> ChildFailure:
        tail = self.stdio_tail()  # read before close() removes the scratch dir
        self.close(wait=True)
        status = self.exit_status if self.exit_status is not None else -1
        if isinstance(exc, ProtocolError):
            return ChildFailure("crash", f"protocol violation: {exc}")
        last_line = next((ln for ln in reversed(tail.strip().splitlines()) if ln.strip()), "")[:300]
        if any(m in tail for m in _OOM_MARKERS):
            return ChildFailure("oom", f"child ran out of memory: {last_line}")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return ChildFailure("timeout", "CPU time limit exceeded")
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            return ChildFailure("crash", f"child killed by {name}" + (f"; last output: {last_line}" if last_line else ""))
        if os.WIFEXITED(status):
            return ChildFailure("crash", f"child exited early with code {os.WEXITSTATUS(status)}" + (f"; last output: {last_line}" if last_line else ""))
        return ChildFailure("crash", f"connection to the child lost ({type(exc).__name__})")

    def close(self, wait: bool = False) -> None:
        """Kill the child and all it started; `wait` for its real exit status (a child that died)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.close()
        finally:
            try:
                self.exit_status = self._launcher.finish(self.pid, wait)
            finally:
                shutil.rmtree(self.scratch, ignore_errors=True)
