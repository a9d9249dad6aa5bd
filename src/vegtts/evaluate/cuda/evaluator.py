"""Trusted parent side of the CUDA evaluator: one thread per GPU, three kinds of process under it.

Per task and GPU (a `GpuSession`, kept across calls for the same task):
- the keeper (`keeper`, trusted: runs only the task's reference): makes every input on the GPU
  from a seed the parent gives, holds the reference outputs, writes each call's inputs into the
  called worker's input slot right before the call, compares each output on the GPU;
- the reference timer (`worker` running the task's source): times the reference, reused;
- per candidate a fresh worker (`worker`, its own interpreter, build folder keyed by its source
  hash), started while the previous candidate is evaluated, so its start costs no time.
The parent never initialises CUDA.  It holds the seeds (trials: public, reproducible; warm-up and
timed calls: salted with a secret drawn per candidate, so no program can compute a timed input
ahead) and the verdict; candidate code never runs in the keeper or the parent.

Timing (per call, see `worker`): the call's own GPU time START -> END on the current stream,
with the host's enqueueing kept outside by the blocking kernel; at least the host time of the call
(a launch-bound program is charged its launches).  Rounds interleave reference and candidate
(ref,cand / cand,ref / ...), `calls_per_round` calls each, every call on fresh inputs the keeper
checks.  The speedup is the ratio of the medians of the per-call times, with the bootstrap interval
of `stats.speedup_stats`, widened to at least +-`min_interval_rel` (two processes timing the same
program differ by that much).  Work left on other streams (the device-wide end is later than the
reference's by more than noise) is flagged `other_stream_work` and both sides are then timed
device-wide; GPU work queued before START beyond the L2 flush is rejected (`untimed_gpu_work`),
CPU work between requests too (`background_work`).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vegtts.evaluate import cache as eval_cache
from vegtts.evaluate.cuda.build_cache import build_dir_for, build_env, is_warm
from vegtts.evaluate.protocol import Encoded, ProtocolError, recv_message, send_json, tune_socket
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.stats import TimingStats, speedup_stats
from vegtts.io import sha256_text
from vegtts.records import EvalRecord, TaskSpec
from vegtts.tasks import runtime as task_runtime

log = logging.getLogger(__name__)

_SRC_ROOT = str(Path(__file__).resolve().parents[3])
_WORKER_STDIO_CAP = 16 << 20
_REF_MODULE = "vegtts_reference_task"
_CAND_MODULE = "vegtts_candidate"
OTHER_STREAM_FLOOR_MS, OTHER_STREAM_SHARE = 0.05, 0.25  # device-wide tail beyond the reference's
PRE_START_FLOOR_MS, PRE_START_SHARE = 0.05, 0.5  # GPU work before START beyond the reference's flush
BACKGROUND_FLOOR_NS, BACKGROUND_SHARE = 10_000_000, 0.05  # candidate CPU between requests beyond the reference's
HOST_SLACK_MS = 0.5  # host time of a call beyond its GPU time that is not charged (Python and launch overhead)
SPARES_PER_GPU = 3  # started workers waiting per GPU: each needs ~3 s to start, a warm candidate ~1 s


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
        self.cpu_clock = _cpu_clock(self.proc.pid)
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


def _cpu_clock(pid: int) -> int | None:
    from vegtts.evaluate.session import process_cpu_clock

    return process_cpu_clock(pid)


def _limit_child() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_WORKER_STDIO_CAP * 64, _WORKER_STDIO_CAP * 64))  # builds write .so files
    # no RLIMIT_AS: the CUDA driver reserves far more address space than it uses


# ----------------------------------------------------------------------------- per task and GPU


def _seed(root: int, *labels: Any) -> int:
    from vegtts.evaluate.runner import derive_seed

    return derive_seed(root, *labels)


def trial_seeds(spec: TaskSpec, settings: EvalSettings) -> list[int]:
    return [_seed(settings.seed, spec.task_id, "trial", i) for i in range(settings.correctness_trials)]


@dataclass
class Timer:
    """A timing worker with its slot pair in the keeper."""

    proc: WorkerProcess
    slot_id: int = 0
    build_s: float = float("nan")
    hold: bool = False
    empty_ms: float = 0.0  # START -> END of an empty call in this worker (the event pair's own cost)


@dataclass
class Verdict:
    status: str
    error: str = ""
    guard: str = ""
    max_abs_err: float = float("nan")
    max_rel_err: float = float("nan")
    timing: TimingStats | None = None
    flags: list[str] = field(default_factory=list)
    build_s: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


class GpuSession:
    """The keeper and the reference timer of one task on one GPU."""

    def __init__(self, spec: TaskSpec, settings: EvalSettings, gpu: str, build_root: Path, dry_device: str | None) -> None:
        self.spec, self.settings, self.gpu, self.build_root, self.dry_device = spec, settings, gpu, build_root, dry_device
        self.key = session_key(spec, settings, dry_device)
        module = task_runtime.load_reference_module(spec)
        self.init_seed = _seed(settings.seed, spec.task_id, "init")
        self.init_inputs = task_runtime.make_init_inputs(module, self.init_seed)
        t0 = time.monotonic()
        self.keeper = WorkerProcess(gpu, None, settings.timeout_s, dry_device, entry="vegtts.evaluate.cuda.keeper")
        ref_proc = self.spawn()  # starts while the keeper sets up
        try:
            info = self.keeper.request({
                "op": "setup", "source": spec.source, "init_seed": self.init_seed, "init_inputs": self.init_inputs,
                "tf32": settings.tf32, "threads": settings.threads, "atol": spec.atol, "rtol": spec.rtol, "atol_scaled": spec.atol_scaled, "trial_seeds": trial_seeds(spec, settings),
            }, timeout_s=max(settings.timeout_s, 120.0))
        except WorkerFailure as exc:
            ref_proc.close()
            self.keeper.close()
            raise RuntimeError(f"task {spec.task_id}: the reference fails in the keeper on GPU {gpu}: {exc.error}") from exc
        self.state_dict = info.get("state_dict")
        self.gpu_uuid = str(info.get("gpu_uuid", ""))
        self.ref: Timer | None = None
        try:
            self.ref = self.setup_timer(ref_proc, spec.source, "Model", _REF_MODULE)
        except WorkerFailure as exc:
            self.close()
            raise RuntimeError(f"task {spec.task_id}: the reference fails in its timing worker on GPU {gpu}: "
                               f"{exc.status}: {exc.error}") from exc
        self.start_s = time.monotonic() - t0

    def spawn(self) -> WorkerProcess:
        return take_spare(self.gpu, self.settings.timeout_s, self.dry_device)

    def setup_timer(self, proc: WorkerProcess, source: str, class_name: str, module: str) -> Timer:
        slot = self.keeper.request({"op": "new_slot"})
        env = build_env(build_dir_for(self.build_root, source, toolchain_id()))
        timer = Timer(proc, int(slot["id"]))
        try:
            reply = proc.request({
                "op": "setup", "source": source, "class_name": class_name, "module_name": module, "module_file": f"{module}.py",
                "init_seed": self.init_seed, "init_inputs": self.init_inputs, "tf32": self.settings.tf32,
                "l2_flush_bytes": self.settings.l2_flush_mb << 20, "state_dict": self.state_dict,
                "slots": {"in": slot["in"], "out": slot["out"]}, "hold": self.settings.gpu_hold,
                "threads": self.settings.threads, "build_env": env,
            }, timeout_s=max(self.settings.timeout_s, self.settings.build_timeout_s))
        except WorkerFailure:
            self.drop(timer)
            raise
        timer.build_s, timer.hold = float(reply.get("build_s", float("nan"))), bool(reply.get("hold"))
        timer.empty_ms = float(reply.get("empty_ms", 0.0))
        if reply.get("gpu_uuid") != self.gpu_uuid:
            self.drop(timer)
            raise WorkerFailure("runtime_error", f"worker on GPU {reply.get('gpu_uuid')!r}, the keeper on {self.gpu_uuid!r}")
        if reply.get("hold_unavailable"):
            log.warning("GPU %s: the blocking kernel is unavailable (%s); timing calls device-wide", self.gpu, reply["hold_unavailable"])
        return timer

    def drop(self, timer: Timer) -> None:
        """Close a timer and free its slots (after the process is gone, so no mapping outlives them)."""
        timer.proc.close()
        if self.keeper.alive():
            try:
                self.keeper.request({"op": "drop_slot", "id": timer.slot_id})
            except WorkerFailure:
                pass

    def restart_reference_timer(self) -> None:
        if self.ref is not None:
            self.drop(self.ref)
        self.ref = self.setup_timer(self.spawn(), self.spec.source, "Model", _REF_MODULE)

    # ------------------------------------------------------------------ one call
    def stage(self, timer: Timer, seed: int, trial: bool = False) -> dict[str, Any]:
        try:
            return self.keeper.request({"op": "stage", "id": timer.slot_id, "seed": seed, "trial": trial})
        except WorkerFailure as exc:
            raise RuntimeError(f"task {self.spec.task_id}: the keeper failed to stage inputs: {exc.error}") from exc

    def check(self, timer: Timer, meta: Any, where: str) -> dict[str, Any]:
        try:
            return self.keeper.request({"op": "check", "id": timer.slot_id, "meta": meta, "where": where})
        except WorkerFailure as exc:
            raise RuntimeError(f"task {self.spec.task_id}: the keeper failed to compare outputs: {exc.error}") from exc

    def call(self, timer: Timer, seed: int, op: str, where: str, trial: bool = False) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Stage, call (`forward` or `time`), compare: (worker reply, keeper verdict, parent wall ms of the call)."""
        staged = self.stage(timer, seed, trial)
        t0 = time.perf_counter_ns()
        try:
            reply = timer.proc.request({"op": op, "inputs": staged["inputs"], "output": staged["output"]})
        except WorkerFailure as exc:
            if timer is not self.ref:
                raise
            # the trusted reference failed while a candidate was evaluated: not the candidate's verdict
            # to take, nor one to trust; the reference timer is restarted for the next candidate
            raise WorkerFailure("rejected", f"reference_disturbed: the reference timer failed during this evaluation "
                                f"({exc.status}: {exc.error[:300]})", "reference_disturbed") from None
        wall_ms = (time.perf_counter_ns() - t0) / 1e6
        return reply, self.check(timer, reply["meta"], where), wall_ms

    def close(self) -> None:
        if self.ref is not None:
            self.drop(self.ref)
            self.ref = None
        self.keeper.close()


def session_key(spec: TaskSpec, settings: EvalSettings, dry_device: str | None) -> str:
    return f"{spec.source_sha256}:{spec.atol}:{spec.rtol}:{spec.atol_scaled}:{settings.settings_hash()}:{dry_device}"


_sessions: dict[str, GpuSession] = {}  # GPU -> the session of the last task evaluated on it
_spares: dict[str, list[WorkerProcess]] = {}  # GPU -> started workers waiting for a program (any task)
_sessions_lock = threading.Lock()


def get_session(spec: TaskSpec, settings: EvalSettings, gpu: str, build_root: Path, dry_device: str | None) -> GpuSession:
    """The GPU's session for this task: reused if the last task on this GPU was the same, else a new one."""
    key = session_key(spec, settings, dry_device)
    with _sessions_lock:
        old = _sessions.get(gpu)
        if old is not None and old.key == key and old.keeper.alive() and old.ref is not None and old.ref.proc.alive():
            return old
        if old is not None:
            old.close()
            del _sessions[gpu]
    session = GpuSession(spec, settings, gpu, build_root, dry_device)
    with _sessions_lock:
        _sessions[gpu] = session
    return session


def take_spare(gpu: str, timeout_s: float, dry_device: str | None) -> WorkerProcess:
    """A started worker of the GPU (the oldest alive one of the same kind), and a new one started in its
    place, so that SPARES_PER_GPU are always starting or waiting."""
    taken: WorkerProcess | None = None
    stale: list[WorkerProcess] = []
    with _sessions_lock:
        pool = _spares.setdefault(gpu, [])
        while pool and taken is None:
            w = pool.pop(0)
            if w.alive() and w.dry_device == dry_device:
                taken = w
            else:
                stale.append(w)
    for w in stale:
        w.close()
    depth = SPARES_PER_GPU if dry_device is None else 1  # CPU test machines: one
    fresh = [WorkerProcess(gpu, None, timeout_s, dry_device) for _ in range(depth + (taken is None) - len(_spares[gpu]))]
    with _sessions_lock:
        _spares[gpu].extend(fresh[1:] if taken is None else fresh)
    taken = taken or fresh[0]
    taken.timeout_s = timeout_s
    return taken


@atexit.register
def close_sessions() -> None:
    """Close every kept session and started worker (at exit; benchmarks call it to start cold)."""
    with _sessions_lock:
        for s in _sessions.values():
            s.close()
        _sessions.clear()
        for pool in _spares.values():
            for w in pool:
                w.close()
        _spares.clear()


# ----------------------------------------------------------------------------- one candidate


def gpu_timing_lock(gpu: str) -> Any:
    """Machine-wide lock per GPU, held for every correctness and timing call (threads, Snakemake jobs):
    timings never share a GPU with another evaluation's calls.  Setup (compilation, module import,
    weights upload) runs outside it, so builds of several evaluations overlap."""
    from vegtts.evaluate.runner import timing_lock

    safe = "".join(ch if ch.isalnum() else "_" for ch in gpu)
    return timing_lock(Path(os.environ.get("VEGTTS_GPU_TIMING_LOCK_DIR", "/tmp")) / f"vegtts-timing-gpu-{safe}.lock")


def evaluate_candidate(session: GpuSession, program: str, proc: WorkerProcess) -> Verdict:
    """Set up `proc` (already started) with `program`, check it, time it against the reference timer."""
    build_dir = build_dir_for(session.build_root, program, toolchain_id())
    warm_before = is_warm(build_dir)
    cand: Timer | None = None
    try:
        cand = session.setup_timer(proc, program, "ModelNew", _CAND_MODULE)
        with gpu_timing_lock(session.gpu):
            v = _check_and_time(session, cand)
    except WorkerFailure as exc:
        v = Verdict(exc.status, exc.error, exc.guard)
    finally:
        if cand is not None:
            session.drop(cand)
        else:
            proc.close()
    if cand is not None:
        v.build_s = cand.build_s
    v.extra["build_cache_warm"] = warm_before
    return v


def _check_and_time(session: GpuSession, cand: Timer) -> Verdict:
    spec, settings = session.spec, session.settings
    worst_abs = worst_rel = 0.0
    for i, seed in enumerate(trial_seeds(spec, settings)):
        _, res, _ = session.call(cand, seed, "forward", f"trial {i}", trial=True)
        worst_abs, worst_rel = max(worst_abs, res["max_abs_err"]), max(worst_rel, res["max_rel_err"])
        if not res["match"]:
            return Verdict("incorrect", res["error"], "", res["max_abs_err"], res["max_rel_err"])
    salt = secrets.randbits(62)  # the parent's secret: no program can know a timed input before its call
    ref = session.ref
    assert ref is not None
    for w in range(settings.warmup_calls):
        seed = _seed(salt, spec.task_id, "warmup", w)
        for timer in (ref, cand):
            _, res, _ = session.call(timer, seed, "forward", f"warm-up call {w}")
            if not res["match"]:
                return _mismatch(session, timer, res)
    sides: dict[str, list[dict[str, Any]]] = {"ref": [], "cand": []}
    for t in (ref, cand):
        t.proc.track_cpu()
    for r in range(settings.timing_rounds):
        order = [("ref", ref), ("cand", cand)] if r % 2 == 0 else [("cand", cand), ("ref", ref)]
        for side, timer in order:
            for c in range(settings.calls_per_round):
                reply, res, wall_ms = session.call(timer, _seed(salt, spec.task_id, "call", r, c), "time", f"timed call {r}.{c}")
                if not res["match"]:
                    return _mismatch(session, timer, res)
                worst_abs, worst_rel = max(worst_abs, res["max_abs_err"]), max(worst_rel, res["max_rel_err"])
                if reply["stream_ms"] > wall_ms + 1.0:
                    raise WorkerFailure("rejected", f"timer_inconsistent: reported {reply['stream_ms']:.3f} ms > parent wall "
                                        f"{wall_ms:.3f} ms", "timer_inconsistent")
                sides[side].append(reply)
    return _verdict(session, sides, cand, worst_abs, worst_rel)


def _mismatch(session: GpuSession, timer: Timer, res: dict[str, Any]) -> Verdict:
    if timer is session.ref:
        raise RuntimeError(f"task {session.spec.task_id}: the reference's own output differs between processes: {res['error']}")
    return Verdict("rejected", f"timed_output_mismatch: {res['error']}", "timed_output_mismatch", res["max_abs_err"], res["max_rel_err"])


def call_times(replies: list[dict[str, Any]], device_wide: bool) -> list[float]:
    """The time of each call: its own GPU time, or device-wide where asked or where the blocking kernel
    did not hold the call; and at least its host time less HOST_SLACK_MS (launch overhead is not
    charged, as the profiler's kernel time has none, but a call that computes on the CPU while the GPU
    is held is charged that work)."""
    out = []
    for r in replies:
        gpu_ms = r["full_ms"] if device_wide or r.get("timed_out") or not r.get("held", True) else r["stream_ms"]
        out.append(max(float(gpu_ms), float(r["host_ms"]) - HOST_SLACK_MS))
    return out


def _median(replies: list[dict[str, Any]], key: str) -> float:
    return float(np.median([float(r[key]) for r in replies]))


def _verdict(session: GpuSession, sides: dict[str, list[dict[str, Any]]], cand: Timer, worst_abs: float, worst_rel: float) -> Verdict:
    spec, settings = session.spec, session.settings
    ref_r, cand_r = sides["ref"], sides["cand"]
    flags: list[str] = []
    pre_excess = _median(cand_r, "pre_ms") - _median(ref_r, "pre_ms")
    if pre_excess > max(PRE_START_FLOOR_MS, PRE_START_SHARE * _median(ref_r, "pre_ms")):
        return Verdict("rejected", f"untimed_gpu_work: {pre_excess:.3f} ms of GPU work queued before each call's start beyond "
                       "the L2 flush", "untimed_gpu_work", worst_abs, worst_rel)
    ref_proc, cand_proc = session.ref.proc, cand.proc  # type: ignore[union-attr]
    if cand_proc.cpu_clock is not None and ref_proc.cpu_clock is not None:
        excess = cand_proc.cpu_idle_ns - ref_proc.cpu_idle_ns
        if excess > max(BACKGROUND_FLOOR_NS, BACKGROUND_SHARE * cand_proc.cpu_in_ns):
            return Verdict("rejected", f"background_work: the candidate's process used {cand_proc.cpu_idle_ns / 1e6:.1f} ms of CPU "
                           f"between its requests (the reference's {ref_proc.cpu_idle_ns / 1e6:.1f} ms): work done off the clock",
                           "background_work", worst_abs, worst_rel)
    tail = lambda rs: float(np.median([r["full_ms"] - r["stream_ms"] for r in rs]))  # noqa: E731
    own = call_times(cand_r, False)
    device_wide = tail(cand_r) - tail(ref_r) > max(OTHER_STREAM_FLOOR_MS, OTHER_STREAM_SHARE * float(np.median(own)))
    if device_wide:
        flags.append("other_stream_work")
    ref_ms, cand_ms = call_times(ref_r, device_wide), call_times(cand_r, device_wide)
    stats = speedup_stats(ref_ms, cand_ms, settings.bootstrap, _seed(settings.seed, spec.task_id, "bootstrap", len(ref_ms)))
    m = settings.min_interval_rel
    stats = replace(stats, speedup_lo=min(stats.speedup_lo, stats.speedup * (1 - m)), speedup_hi=max(stats.speedup_hi, stats.speedup * (1 + m)))
    if stats.speedup > settings.excessive_speedup:
        flags.append("excessive_speedup")
    host_bound = lambda rs: sum(r["host_ms"] - HOST_SLACK_MS > r["stream_ms"] for r in rs)  # noqa: E731
    extra = {
        "ref_stream_ms": _median(ref_r, "stream_ms"), "cand_stream_ms": _median(cand_r, "stream_ms"),
        "ref_full_ms": _median(ref_r, "full_ms"), "cand_full_ms": _median(cand_r, "full_ms"),
        "ref_host_ms": _median(ref_r, "host_ms"), "cand_host_ms": _median(cand_r, "host_ms"),
        "ref_pre_ms": _median(ref_r, "pre_ms"), "cand_pre_ms": _median(cand_r, "pre_ms"),
        "speedup_device_wide": _median(ref_r, "full_ms") / max(_median(cand_r, "full_ms"), 1e-9),
        "host_bound_calls": [host_bound(ref_r), host_bound(cand_r)],
        "unheld_calls": [sum(bool(r.get("timed_out")) or not r.get("held", True) for r in rs) for rs in (ref_r, cand_r)],
        "calls_per_side": len(ref_r), "gpu_uuid": session.gpu_uuid, "held": [session.ref.hold, cand.hold],  # type: ignore[union-attr]
        "empty_call_ms": [session.ref.empty_ms, cand.empty_ms],  # type: ignore[union-attr]
        "timing_windows": [[side, session.gpu_uuid, *r["window_ns"]] for side, rs in (("ref", ref_r), ("cand", cand_r)) for r in rs],
        "cpu_idle_ms": [ref_proc.cpu_idle_ns / 1e6, cand_proc.cpu_idle_ns / 1e6],
    }
    return Verdict("ok", "", "", worst_abs, worst_rel, stats, flags, extra=extra)


# ----------------------------------------------------------------------------- task entry point


def _record(spec: TaskSpec, program: str, v: Verdict, seconds: float, hardware: str) -> EvalRecord:
    from vegtts.evaluate.runner import verdict_record  # runner imports this module lazily

    return verdict_record(spec, sha256_text(program) if program else "", v, seconds, hardware)


def default_build_root(cache_dir: Path | None, settings: EvalSettings) -> Path:
    if settings.build_cache_dir:
        return Path(settings.build_cache_dir).expanduser()
    if cache_dir is not None:
        return Path(cache_dir) / "cuda_builds"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vegtts" / "cuda_builds"


def _evaluate_with_retime(session: GpuSession, program: str, proc: WorkerProcess) -> Verdict:
    v = evaluate_candidate(session, program, proc)
    settings = session.settings
    if v.status == "ok" and v.timing is not None and v.timing.speedup > settings.excessive_speedup:
        # as on the CPU: re-time with a fresh reference timer and a fresh candidate worker (and new secret inputs)
        first = v.timing.speedup
        session.restart_reference_timer()
        v2 = evaluate_candidate(session, program, session.spawn())
        v2.flags = [f for f in v2.flags if f != "excessive_speedup"] + ["excessive_speedup_retimed"]
        if v2.status == "ok" and v2.timing is not None:
            log.warning("task %s: speedup %.1fx re-timed with fresh workers: %.1fx", session.spec.task_id, first, v2.timing.speedup)
            if v2.timing.speedup > settings.excessive_speedup:
                v2.flags.append("excessive_speedup")
        v2.extra["build_cache_warm"] = v.extra.get("build_cache_warm")
        v2.build_s = v.build_s
        v = v2
    return v


def evaluate_task_cuda(
    spec: TaskSpec,
    candidates: list[tuple[str, str]],
    settings: EvalSettings,
    cache_dir: Path | None = None,
    *,
    gpus: list[str] | None = None,
    dry_device: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> list[EvalRecord]:
    """`evaluate_task` for device "cuda": one worker thread per GPU pulls candidates from a queue.

    `dry_device="cpu"` runs the same orchestration with CPU processes (tests on machines without a
    GPU; never used for results).  `details`, if given, receives one dict per evaluated program
    (GPU, build time, whether the build cache was warm, the timing details of `_verdict`).
    """
    from vegtts.evaluate.runner import _pre_check  # the CPU evaluator's static checks, shared

    gpus = gpus if gpus is not None else visible_gpus()
    if settings.gpus:
        gpus = gpus[: settings.gpus]
    if not gpus and dry_device is None:
        raise RuntimeError("evaluation.device is 'cuda' but no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi -L)")
    if dry_device is not None and not gpus:
        gpus = ["dry0"]
    hardware = f"cuda:{gpu_name()}" if dry_device is None else f"dry:{dry_device}"
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    build_root = default_build_root(cache_dir, settings)
    build_root.mkdir(parents=True, exist_ok=True)

    results: dict[str, EvalRecord] = {}
    cached: set[str] = set()
    todo: queue.Queue[str] = queue.Queue()
    for program in dict.fromkeys(p for _, p in candidates):
        sha = sha256_text(program) if program else ""
        path = eval_cache.record_path(cache_dir, spec, settings, sha) if cache_dir is not None and program else None
        hit = eval_cache.load(path) if path is not None else None
        if hit is not None:
            results[program] = hit
            cached.add(program)
            continue
        pre = _pre_check(spec, program, settings)
        if pre is not None:
            results[program] = _record(spec, program, Verdict(pre.status, pre.error, pre.guard), 0.0, hardware)
        else:
            todo.put(program)

    lock = threading.Lock()
    errors: list[BaseException] = []
    from tqdm import tqdm

    bar = tqdm(total=todo.qsize(), desc=f"evaluate {spec.task_id} on {len(gpus)} GPU(s)", unit="cand", disable=None, leave=False)

    def take() -> str | None:
        try:
            return todo.get_nowait()
        except queue.Empty:
            return None

    def gpu_loop(gpu: str) -> None:
        session: GpuSession | None = None
        program = take()
        if program is None:
            return
        try:
            while program is not None:
                if session is None:
                    session = get_session(spec, settings, gpu, build_root, dry_device)
                t0 = time.monotonic()
                # a started worker; its replacement starts now, while this candidate is evaluated
                v = _evaluate_with_retime(session, program, take_spare(gpu, settings.timeout_s, dry_device))
                if session.ref is None or not session.ref.proc.alive():
                    session.restart_reference_timer()
                rec = _record(spec, program, v, time.monotonic() - t0, hardware)
                if cache_dir is not None and program:
                    eval_cache.store(eval_cache.record_path(cache_dir, spec, settings, rec.code_sha256), rec)
                with lock:
                    results[program] = rec
                    bar.update(1)
                    if details is not None:
                        details.append({"code_sha256": rec.code_sha256, "gpu": gpu, "build_s": v.build_s, "seconds": rec.eval_seconds,
                                        "session_start_s": session.start_s, **v.extra})
                program = take()
        except BaseException as exc:  # noqa: BLE001 - reported after the threads join
            errors.append(exc)

    threads = [threading.Thread(target=gpu_loop, args=(g,), name=f"vegtts-gpu-{g}") for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    if errors:
        raise errors[0]
    out = []
    for code_sha, program in candidates:
        rec = results[program]
        out.append(replace(rec, code_sha256=code_sha or rec.code_sha256, cached=program in cached))
    return out
