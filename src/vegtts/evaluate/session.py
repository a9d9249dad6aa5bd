"""One sandboxed child as seen from the parent: requests with a deadline, failures as statuses."""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vegtts.evaluate.protocol import Encoded, ProtocolError, recv_message, send_json, tune_socket
from vegtts.evaluate.sandbox import process_cpu_clock
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


@dataclass
class Measured:
    """One request as the parent saw it: wall time, and the child's process CPU clock just before
    the request was sent and just after its reply arrived (None where the OS gives no such clock)."""

    reply: dict[str, Any]
    wall_ns: int
    cpu_before: int | None
    cpu_after: int | None

    @property
    def cpu_ns(self) -> int | None:
        return None if self.cpu_before is None or self.cpu_after is None else self.cpu_after - self.cpu_before


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
        self.confinement: dict[str, Any] = {}  # what the child reported at setup (private dirs, seccomp)
        self.role = ""  # "ref" or "cand", set by the runner

    def extend(self, timeout_s: float) -> None:
        """A fresh wall-clock budget from now (a session reused for a new phase or candidate)."""
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s

    def cpu_ns(self) -> int | None:
        """CPU time of the child's whole process (every thread, user + system), ns; None if unknown."""
        if self._cpu_clock is None:
            return None
        try:
            return time.clock_gettime_ns(self._cpu_clock)
        except OSError:  # the child is gone
            return None

    def alive(self) -> bool:
        return not self._closed and not self._child_gone()

    def pin(self, cpus: list[int] | None) -> None:
        """Move every thread of the child onto `cpus` (the parent may do this; the child cannot
        undo it: its seccomp filter refuses sched_setaffinity).  Repeated until no thread is left
        elsewhere, so a thread started during the move is caught too."""
        if not cpus:
            return
        target = set(cpus)
        for _ in range(5):
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
            except OSError:
                return
            moved = 0
            for tid in tids:
                try:
                    if os.sched_getaffinity(tid) != target:
                        os.sched_setaffinity(tid, cpus)
                        moved += 1
                except OSError:
                    pass
            if not moved:
                return

    def set_nice(self, value: int) -> bool:
        """Give every thread of the child the scheduling priority `value` (parent side; needs root
        to go below the current nice value).  False where the OS refused.

        The child leads a session of its own, and with the kernel's autogroup scheduling
        (/proc/sys/kernel/sched_autogroup_enabled) a thread's nice value only orders it within its
        session's group, while groups share a cpu by the group's own nice value: that one is set
        too (/proc/<pid>/autogroup), or a busy machine's other sessions get most of the timing cpu
        whatever the threads' nice says.
        """
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
        try:
            with open(f"/proc/{self.pid}/autogroup", "w") as f:
                f.write(str(value))
        except OSError:
            pass  # no autogroup scheduling in this kernel, or not allowed: the threads' nice is all there is
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

    def __enter__(self) -> ChildSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests
    def request(self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None = None) -> dict[str, Any]:
        """Send a request (a JSON-able dict, or an Encoded message with tensors); return the ok reply.

        Every request carries a fresh nonce that the harness echoes in its reply; a reply without
        it is the candidate's (rejected as `harness_reply`), whichever request it answers.

        `after_send(sock)` runs right after the request is sent (it passes a file descriptor).
        """
        return self._exchange(msg, after_send)

    def measured_request(
        self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None = None
    ) -> Measured:
        """A request whose wall time (the parent's clock) and CPU use (the child's process clock,
        read by the parent from the kernel) are measured; the clocks live here, not in the child."""
        cpu_before = self.cpu_ns()
        t0 = time.perf_counter_ns()
        reply = self._exchange(msg, after_send)
        wall = time.perf_counter_ns() - t0
        return Measured(reply, wall, cpu_before, self.cpu_ns())

    def _exchange(self, msg: dict[str, Any] | Encoded, after_send: Callable[[socket.socket], None] | None) -> dict[str, Any]:
        try:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            nonce = secrets.randbits(62)
            if isinstance(msg, Encoded):
                msg.send(self.sock, nonce)
            else:
                send_json(self.sock, {**msg, "nonce": nonce})
            if after_send is not None:
                after_send(self.sock)
            self._wait_readable()
            reply = recv_message(self.sock, self.deadline, self.max_reply_bytes)
        except TimeoutError:
            raise self._fail("timeout", f"no reply within the {self.timeout_s:g} s limit") from None
        except (EOFError, OSError, ProtocolError) as exc:
            raise self._died(exc) from None
        if not isinstance(reply, dict):
            raise self._fail("crash", "protocol violation: reply is not a mapping")
        if reply.get("nonce") != nonce:
            # the harness echoes every request's nonce; a reply without it was written by the
            # candidate's code on the harness's socket (and the real one is still to come, or swallowed)
            raise self._fail("rejected", "harness_reply: the reply does not carry the request's nonce: it was not the harness's",
                             guard="harness_reply")
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
    def _fail(self, status: str, error: str, guard: str = "") -> ChildFailure:
        self.close()
        return ChildFailure(status, error, guard)

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
