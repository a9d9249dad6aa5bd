"""Trusted parent side of the CUDA evaluator: one thread per GPU, workers do the GPU work.

Per task and GPU one reference worker is kept for all candidates; per candidate a fresh worker
(its own interpreter, CUDA_VISIBLE_DEVICES = its GPU, build folder keyed by its source hash).
The parent never initialises CUDA: it generates every input on the CPU from seeds, sends the same
values to both sides, compares outputs, and computes the statistics.

Timing: `warmup_calls` untimed calls, then `timing_rounds` rounds interleaved reference/candidate
(ref,cand / cand,ref / ...), `calls_per_round` calls each, every call on inputs of its own
(generated once per task, the same for both sides).  A round's time is the mean of its calls'
start -> after-device-sync event times; the speedup is the ratio of medians with the bootstrap
interval of `stats.speedup_stats`.  After each round the last call's outputs of both sides are
compared in full (`timed_output_mismatch`).  Only one thread uses a GPU, so timing never shares one.
"""

from __future__ import annotations

import logging
import os
import queue
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
from vegtts.evaluate.compare import Comparison, compare_outputs, same_values
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
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


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


# ----------------------------------------------------------------------------- one worker process


class WorkerProcess:
    """A sandboxed worker: own session, scratch cwd, capped stdout, CPU-time limit; killed as a group."""

    def __init__(self, gpu: str, build_dir: Path | None, timeout_s: float, dry_device: str | None = None) -> None:
        self.timeout_s = timeout_s
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
                [sys.executable, "-m", "vegtts.evaluate.cuda.worker", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), cwd=self.scratch, env=env,
                stdin=subprocess.DEVNULL, stdout=stdio, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_limit_child,
            )
        finally:
            stdio.close()
            child_sock.close()
        self.sock = parent_sock

    def request(self, msg: Any, timeout_s: float | None = None) -> dict[str, Any]:
        payload = msg if isinstance(msg, Encoded) else Encoded(msg)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        try:
            payload.send(self.sock)
            reply = recv_message(self.sock, deadline=deadline)
        except (EOFError, OSError, ProtocolError, TimeoutError) as exc:
            raise self._died(exc) from None
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
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_WORKER_STDIO_CAP * 64, _WORKER_STDIO_CAP * 64))  # builds write .so files
    # no RLIMIT_AS: the CUDA driver reserves far more address space than it uses


# ----------------------------------------------------------------------------- per task


def _seed(root: int, *labels: Any) -> int:
    from vegtts.evaluate.runner import derive_seed

    return derive_seed(root, *labels)


@dataclass
class TaskInputs:
    """Every input of a task, generated on the CPU by the trusted parent, the same for both sides."""

    trials: list[list[Any]]
    rounds: list[list[list[Any]]]  # round -> call -> inputs
    init_seed: int
    init_inputs: list[Any]


_last_inputs: dict[tuple[Any, ...], TaskInputs] = {}


def task_inputs(spec: TaskSpec, settings: EvalSettings) -> TaskInputs:
    """The last task's inputs are kept, so repeated calls for one task (sample files, re-runs, other
    timing procedures) reuse them; they depend only on the task, the seed and the trial/round counts."""
    key = (spec.source_sha256, settings.seed, settings.correctness_trials, settings.timing_rounds, settings.calls_per_round)
    if key not in _last_inputs:
        _last_inputs.clear()
        _last_inputs[key] = make_task_inputs(spec, settings)
    return _last_inputs[key]


def make_task_inputs(spec: TaskSpec, settings: EvalSettings) -> TaskInputs:
    module = task_runtime.load_reference_module(spec)
    trials = [task_runtime.make_inputs(module, _seed(settings.seed, spec.task_id, "trial", i)) for i in range(settings.correctness_trials)]
    rounds = [
        [task_runtime.make_inputs(module, _seed(settings.seed, spec.task_id, "round", r, c)) for c in range(settings.calls_per_round)]
        for r in range(settings.timing_rounds)
    ]
    init_seed = _seed(settings.seed, spec.task_id, "init")
    return TaskInputs(trials, rounds, init_seed, task_runtime.make_init_inputs(module, init_seed))


@dataclass
class GpuReference:
    """The reference worker of one task on one GPU, its weights and its outputs."""

    gpu: str
    worker: WorkerProcess
    state_dict: dict[str, Any] | None
    trial_outputs: list[Any]
    build_s: float
    gpu_uuid: str = ""


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


def _setup_msg(spec: TaskSpec, source: str, class_name: str, module: str, inputs: TaskInputs, settings: EvalSettings,
               state_dict: dict[str, Any] | None, want_state: bool) -> dict[str, Any]:
    return {
        "op": "setup", "source": source, "class_name": class_name, "module_name": module,
        "module_file": f"{module}.py", "init_seed": inputs.init_seed, "init_inputs": inputs.init_inputs, "tf32": settings.tf32,
        "l2_flush_bytes": settings.l2_flush_mb << 20, "state_dict": state_dict, "want_state_dict": want_state,
        "keep_alive_ms": settings.keep_alive_ms, "launch_lead_us": settings.launch_lead_us,
    }


def start_reference(spec: TaskSpec, settings: EvalSettings, inputs: TaskInputs, gpu: str, build_root: Path,
                    dry_device: str | None = None) -> GpuReference:
    worker = WorkerProcess(gpu, build_dir_for(build_root, spec.source, toolchain_id()), settings.timeout_s, dry_device)
    try:
        reply = worker.request(_setup_msg(spec, spec.source, "Model", _REF_MODULE, inputs, settings, None, True))
        with gpu_timing_lock(gpu):
            outputs = [worker.request({"op": "forward", "inputs": trial})["output"] for trial in inputs.trials]
    except WorkerFailure as exc:
        worker.close()
        raise RuntimeError(f"task {spec.task_id}: the reference fails on GPU {gpu}: {exc.status}: {exc.error}") from exc
    return GpuReference(gpu, worker, reply.get("state_dict"), outputs, float(reply.get("build_s", 0.0)), str(reply.get("gpu_uuid", "")))


def _check_trial(spec: TaskSpec, ref_out: Any, reply: dict[str, Any], sent: list[Any], where: str) -> Comparison:
    cmp = compare_outputs(ref_out, reply["output"], spec.atol, spec.rtol, where, atol_scaled=spec.atol_scaled)
    if cmp.ok and not same_values(sent, list(reply["inputs"])):
        return Comparison(False, cmp.max_abs_err, cmp.max_rel_err, f"{where}: the call changed its inputs")
    return cmp


def evaluate_candidate(spec: TaskSpec, program: str, settings: EvalSettings, inputs: TaskInputs, ref: GpuReference,
                       build_root: Path, dry_device: str | None = None) -> Verdict:
    build_dir = build_dir_for(build_root, program, toolchain_id())
    warm_before = is_warm(build_dir)
    cand = WorkerProcess(ref.gpu, build_dir, settings.timeout_s, dry_device)
    try:
        v = _run_candidate(spec, program, settings, inputs, ref, cand)
    except WorkerFailure as exc:
        v = Verdict(exc.status, exc.error, exc.guard)
    finally:
        cand.close()
    v.extra["build_cache_warm"] = warm_before
    return v


def _run_candidate(spec: TaskSpec, program: str, settings: EvalSettings, inputs: TaskInputs, ref: GpuReference,
                   cand: WorkerProcess) -> Verdict:
    reply = cand.request(_setup_msg(spec, program, "ModelNew", _CAND_MODULE, inputs, settings, ref.state_dict, False),
                         timeout_s=max(settings.timeout_s, settings.build_timeout_s))
    build_s = float(reply.get("build_s", float("nan")))
    if reply.get("gpu_uuid") != ref.gpu_uuid:
        raise WorkerFailure("runtime_error", f"candidate worker on GPU {reply.get('gpu_uuid')!r}, its reference on {ref.gpu_uuid!r}")
    worst = Comparison(True)
    # correctness calls too: another evaluation's calls on this GPU must not overlap a timing window
    with gpu_timing_lock(ref.gpu):
        for i, trial in enumerate(inputs.trials):
            out = cand.request({"op": "forward", "inputs": trial})
            cmp = _check_trial(spec, ref.trial_outputs[i], out, trial, f"trial {i}")
            worst = worst.merge(cmp)
            if not cmp.ok:
                return Verdict("incorrect", cmp.error, "", cmp.max_abs_err, cmp.max_rel_err, build_s=build_s)
        return _time_candidate(spec, program, settings, inputs, ref, cand, worst, build_s)


def gpu_timing_lock(gpu: str) -> Any:
    """Machine-wide lock per GPU, held for every correctness and timing call (threads, Snakemake jobs):
    timings never share a GPU with another evaluation's calls.  Setup (compilation, module import,
    weights upload) runs outside it, so builds of several evaluations overlap."""
    from vegtts.evaluate.runner import timing_lock

    safe = "".join(ch if ch.isalnum() else "_" for ch in gpu)
    return timing_lock(Path(os.environ.get("VEGTTS_GPU_TIMING_LOCK_DIR", "/tmp")) / f"vegtts-timing-gpu-{safe}.lock")


def _time_candidate(spec: TaskSpec, program: str, settings: EvalSettings, inputs: TaskInputs, ref: GpuReference,
                    cand: WorkerProcess, worst: Comparison, build_s: float) -> Verdict:
    for i in range(settings.warmup_calls):
        for w in (ref.worker, cand):
            w.request({"op": "forward", "inputs": inputs.trials[i % len(inputs.trials)], "discard": True})
    ref_ms, cand_ms, ref_stream, cand_stream = [], [], [], []
    windows: list[list[Any]] = []  # [side, gpu uuid, start ns, end ns] of every timed round (host wall clock)
    keep_alive_ms: list[float] = []  # host time spent enqueueing keep-alive work per timed call
    flags: list[str] = []
    for r, calls in enumerate(inputs.rounds):
        load = Encoded({"op": "load", "calls": calls})
        results: dict[str, dict[str, Any]] = {}
        order = [("ref", ref.worker), ("cand", cand)] if r % 2 == 0 else [("cand", cand), ("ref", ref.worker)]
        for side, worker in order:
            worker.request(load)
            t0 = time.perf_counter_ns()
            res = worker.request({"op": "time"})
            wall_ms = (time.perf_counter_ns() - t0) / 1e6
            if sum(res["full_ms"]) > wall_ms + 1.0:
                raise WorkerFailure("rejected", f"timer_inconsistent: reported {sum(res['full_ms']):.3f} ms > parent wall {wall_ms:.3f} ms",
                                    "timer_inconsistent")
            results[side] = res
            windows.append([side, ref.gpu_uuid, *res.get("window_ns", [0, 0])])
            keep_alive_ms.extend(res.get("keep_alive_ms", []))
        cmp = compare_outputs(results["ref"]["output"], results["cand"]["output"], spec.atol, spec.rtol, f"timed round {r}", atol_scaled=spec.atol_scaled)
        if not cmp.ok:
            return Verdict("rejected", cmp.error, "timed_output_mismatch", cmp.max_abs_err, cmp.max_rel_err, build_s=build_s)
        worst = worst.merge(cmp)
        ref_ms.append(float(np.mean(results["ref"]["full_ms"])))
        cand_ms.append(float(np.mean(results["cand"]["full_ms"])))
        ref_stream.append(float(np.mean(results["ref"]["stream_ms"])))
        cand_stream.append(float(np.mean(results["cand"]["stream_ms"])))
    stats = speedup_stats(ref_ms, cand_ms, settings.bootstrap, _seed(settings.seed, spec.task_id, "bootstrap", sha256_text(program)))
    # work outside the current stream: the candidate's device-sync tail is longer than the reference's
    ref_tail = float(np.median(ref_ms)) - float(np.median(ref_stream))
    cand_tail = float(np.median(cand_ms)) - float(np.median(cand_stream))
    if cand_tail - ref_tail > max(0.05, 0.25 * float(np.median(cand_ms))):
        flags.append("other_stream_work")
    if stats.speedup > settings.excessive_speedup:
        flags.append("excessive_speedup")
    extra = {
        "speedup_current_stream": float(np.median(ref_stream)) / max(float(np.median(cand_stream)), 1e-9),
        "ref_stream_ms": float(np.median(ref_stream)), "cand_stream_ms": float(np.median(cand_stream)),
        "gpu_uuid": ref.gpu_uuid, "timing_windows": windows,
        "keep_alive_host_ms": float(np.median(keep_alive_ms)) if keep_alive_ms else 0.0,
    }
    return Verdict("ok", "", "", worst.max_abs_err, worst.max_rel_err, stats, flags, build_s, extra)


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

    `dry_device="cpu"` runs the same orchestration with CPU workers (tests on machines without a
    GPU; never used for results).  `details`, if given, receives one dict per evaluated program
    (build time, whether the build cache was warm, current-stream speedup).
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
    todo: "queue.Queue[str]" = queue.Queue()
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

    inputs = task_inputs(spec, settings) if not todo.empty() else None
    lock = threading.Lock()
    errors: list[BaseException] = []

    def gpu_loop(gpu: str) -> None:
        ref: GpuReference | None = None
        try:
            while True:
                try:
                    program = todo.get_nowait()
                except queue.Empty:
                    return
                if ref is None:
                    ref = start_reference(spec, settings, inputs, gpu, build_root, dry_device)  # type: ignore[arg-type]
                t0 = time.monotonic()
                v = evaluate_candidate(spec, program, settings, inputs, ref, build_root, dry_device)  # type: ignore[arg-type]
                if v.status == "ok" and v.timing is not None and v.timing.speedup > settings.excessive_speedup:
                    # as on the CPU: re-time with a fresh reference worker and a fresh candidate worker
                    ref.worker.close()
                    ref = start_reference(spec, settings, inputs, gpu, build_root, dry_device)  # type: ignore[arg-type]
                    v2 = evaluate_candidate(spec, program, settings, inputs, ref, build_root, dry_device)  # type: ignore[arg-type]
                    v2.flags = [f for f in v2.flags if f != "excessive_speedup"] + ["excessive_speedup_retimed"]
                    if v2.status == "ok" and v2.timing is not None and v2.timing.speedup > settings.excessive_speedup:
                        v2.flags.append("excessive_speedup")
                    v2.extra["build_cache_warm"] = v.extra.get("build_cache_warm")
                    v2.build_s = v.build_s
                    v = v2
                if v.status == "crash" and ref.worker.proc.poll() is not None:
                    ref.worker.close()
                    ref = None
                rec = _record(spec, program, v, time.monotonic() - t0, hardware)
                if cache_dir is not None and program:
                    eval_cache.store(eval_cache.record_path(cache_dir, spec, settings, rec.code_sha256), rec)
                with lock:
                    results[program] = rec
                    if details is not None:
                        details.append({"code_sha256": rec.code_sha256, "gpu": gpu, "build_s": v.build_s, **v.extra})
        except BaseException as exc:  # noqa: BLE001 - reported after the threads join
            errors.append(exc)
        finally:
            if ref is not None:
                ref.worker.close()

    threads = [threading.Thread(target=gpu_loop, args=(g,), name=f"vegtts-gpu-{g}") for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = []
    for code_sha, program in candidates:
        rec = results[program]
        out.append(replace(rec, code_sha256=code_sha or rec.code_sha256, cached=program in cached))
    return out
