"""The processes under the CUDA evaluator's parent, and the GPUs they run on (no CUDA init here).

A `WorkerProcess` is a fresh interpreter running the timing worker (`worker`) or the keeper
(`keeper`): its own session, a scratch cwd, capped stdout, no core dumps; killed as a group.  Its
requests carry a deadline; a failure comes back as a `WorkerFailure` with a status.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vegtts.evaluate.cuda.build_cache import build_env
from vegtts.evaluate.protocol import Encoded, ProtocolError, recv_message, send_json, tune_socket
from vegtts.evaluate.sandbox import process_cpu_clock

_SRC_ROOT = str(Path(__file__).resolve().parents[3])
_WORKER_STDIO_CAP = 16 << 20


class WorkerFailure(Exception):
    def __init__(self, status: str, error: str, guard: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.guard = status, error, guard


# ----------------------------------------------------------------------------- GPUs (no CUDA init)


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without initialising CUDA (CUDA_VISIBLE_DEVICES or nvidia-smi)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(row for row in out.splitlines() if row.startswith("GPU "))]


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return out.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "no-gpu"


def toolchain_id() -> str:
    """What a build depends on besides the source: torch, its CUDA, the arch list, the GPU."""
    return f"torch={torch.__version__};cuda={torch.version.cuda};arch={os.environ.get('TORCH_CUDA_ARCH_LIST', '')};gpu={gpu_name()}"


# ----------------------------------------------------------------------------- one process


class WorkerProcess:
    """A sandboxed process: own session, scratch cwd, capped stdout, no core dumps; killed as a group.

    `entry` is the module it runs: the timing worker or the keeper.  Starting returns at once; the
    interpreter imports torch while the parent does other work.
    """

    def __init__(self, gpu: str, build_dir: Path | None, timeout_s: float, dry_device: str | None = None,
                 entry: str = "vegtts.evaluate.cuda.worker") -> None:
        self.timeout_s = timeout_s
        self.dry_device = dry_device
        self.scratch = Path(tempfile.mkdtemp(prefix="vegtts-gpu-"))
        self.stdio_path = self.scratch / "stdio.log"
        parent_sock, child_sock = socket.socketpair()
        tune_socket(parent_sock)
        env = dict(os.environ)
        env["PYTHONPATH"] = _SRC_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["CUDA_VISIBLE_DEVICES"] = gpu
        env["HOME"] = env["TMPDIR"] = str(self.scratch)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("CUDA_LAUNCH_BLOCKING", None)
        if build_dir is not None:
            env.update(build_env(build_dir))
        if dry_device:
            env["VEGTTS_WORKER_DEVICE"] = dry_device
        stdio = open(self.stdio_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", entry, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), cwd=self.scratch, env=env,
                stdin=subprocess.DEVNULL, stdout=stdio, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_limit_child,
            )
        finally:
            stdio.close()
            child_sock.close()
        self.sock = parent_sock
        self.cpu_clock = process_cpu_clock(self.proc.pid)
        self.cpu_in_ns = 0  # CPU time inside requests since the last reset
        self.cpu_idle_ns = 0  # ... and between them
        self._cpu_mark: int | None = None
        self.closed = False

    def track_cpu(self) -> None:
        self.cpu_in_ns = self.cpu_idle_ns = 0
        self._cpu_mark = self._cpu_now()

    def _cpu_now(self) -> int | None:
        if self.cpu_clock is None:
            return None
        try:
            return time.clock_gettime_ns(self.cpu_clock)
        except OSError:
            return None

    def request(self, msg: Any, timeout_s: float | None = None) -> dict[str, Any]:
        payload = msg if isinstance(msg, Encoded) else Encoded(msg)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        before = self._cpu_now() if self._cpu_mark is not None else None
        try:
            payload.send(self.sock)
            reply = recv_message(self.sock, deadline=deadline)
        except (EOFError, OSError, ProtocolError, TimeoutError) as exc:
            raise self._died(exc) from None
        if before is not None and self._cpu_mark is not None:
            after = self._cpu_now()
            if after is not None:
                self.cpu_idle_ns += before - self._cpu_mark
                self.cpu_in_ns += after - before
                self._cpu_mark = after
        if not isinstance(reply, dict):
            raise WorkerFailure("crash", "worker sent a malformed reply")
        if not reply.get("ok"):
            raise WorkerFailure(str(reply.get("status", "runtime_error")), str(reply.get("error", ""))[:4000], str(reply.get("guard", "")))
        return reply

    def _died(self, exc: BaseException) -> WorkerFailure:
        timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc).lower()
        self.kill()
        if timed_out:
            return WorkerFailure("timeout", f"no reply within {self.timeout_s:.0f} s")
        code = self.proc.returncode
        tail = self.output_tail(1500)
        if code is not None and code < 0:
            return WorkerFailure("crash", f"worker killed by signal {-code}; output tail:\n{tail}")
        return WorkerFailure("crash", f"worker exited (code {code}) in the middle of a request; output tail:\n{tail}")

    def output_tail(self, n: int) -> str:
        try:
            data = self.stdio_path.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            send_json(self.sock, {"op": "bye"})
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()  # anything the program left in its session dies too
        self.sock.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_WORKER_STDIO_CAP * 64, _WORKER_STDIO_CAP * 64))  # builds write .so files
    # no RLIMIT_AS: the CUDA driver reserves far more address space than it uses
