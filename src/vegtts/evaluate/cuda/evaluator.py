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

import logging
import os
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vegtts.evaluate.cuda.build_cache import build_dir_for, is_warm
from vegtts.evaluate.cuda.gpu_session import GpuSession, Timer, get_session, take_spare, trial_seeds
from vegtts.evaluate.cuda.processes import WorkerFailure, WorkerProcess, gpu_name, toolchain_id, visible_gpus
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.stats import speedup_stats
from vegtts.evaluate.task import Finish, Verdict, derive_seed, evaluate_programs, timing_lock
from vegtts.records import EvalRecord, TaskSpec

log = logging.getLogger(__name__)

_CAND_MODULE = "vegtts_candidate"
OTHER_STREAM_FLOOR_MS, OTHER_STREAM_SHARE = 0.05, 0.25  # device-wide tail beyond the reference's
PRE_START_FLOOR_MS, PRE_START_SHARE = 0.05, 0.5  # GPU work before START beyond the reference's flush
BACKGROUND_FLOOR_NS, BACKGROUND_SHARE = 10_000_000, 0.05  # candidate CPU between requests beyond the reference's
HOST_SLACK_MS = 0.5  # host time of a call beyond its GPU time that is not charged (Python and launch overhead)


@dataclass
class GpuVerdict(Verdict):
    build_s: float = float("nan")  # the candidate's build (compile, import) in its worker
    extra: dict[str, Any] = field(default_factory=dict)  # timing details (`_verdict`), for `details`


# ----------------------------------------------------------------------------- one candidate


def gpu_timing_lock(gpu: str) -> Any:
    """Machine-wide lock per GPU, held for every correctness and timing call (threads, Snakemake jobs):
    timings never share a GPU with another evaluation's calls.  Setup (compilation, module import,
    weights upload) runs outside it, so builds of several evaluations overlap."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in gpu)
    return timing_lock(Path(os.environ.get("VEGTTS_GPU_TIMING_LOCK_DIR", "/tmp")) / f"vegtts-timing-gpu-{safe}.lock")


def evaluate_candidate(session: GpuSession, program: str, proc: WorkerProcess) -> GpuVerdict:
    """Set up `proc` (already started) with `program`, check it, time it against the reference timer."""
    build_dir = build_dir_for(session.build_root, program, toolchain_id())
    warm_before = is_warm(build_dir)
    cand: Timer | None = None
    try:
        cand = session.setup_timer(proc, program, "ModelNew", _CAND_MODULE)
        with gpu_timing_lock(session.gpu):
            v = _check_and_time(session, cand)
    except WorkerFailure as exc:
        v = GpuVerdict(exc.status, exc.error, exc.guard)
    finally:
        if cand is not None:
            session.drop(cand)
        else:
            proc.close()
    if cand is not None:
        v.build_s = cand.build_s
    v.extra["build_cache_warm"] = warm_before
    return v


def _check_and_time(session: GpuSession, cand: Timer) -> GpuVerdict:
    spec, settings = session.spec, session.settings
    worst_abs = worst_rel = 0.0
    for i, seed in enumerate(trial_seeds(spec, settings)):
        _, res, _ = session.call(cand, seed, "forward", f"trial {i}", trial=True)
        worst_abs, worst_rel = max(worst_abs, res["max_abs_err"]), max(worst_rel, res["max_rel_err"])
        if not res["match"]:
            return GpuVerdict("incorrect", res["error"], "", res["max_abs_err"], res["max_rel_err"])
    salt = secrets.randbits(62)  # the parent's secret: no program can know a timed input before its call
    ref = session.ref
    assert ref is not None
    for w in range(settings.warmup_calls):
        seed = derive_seed(salt, spec.task_id, "warmup", w)
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
                reply, res, wall_ms = session.call(timer, derive_seed(salt, spec.task_id, "call", r, c), "time", f"timed call {r}.{c}")
                if not res["match"]:
                    return _mismatch(session, timer, res)
                worst_abs, worst_rel = max(worst_abs, res["max_abs_err"]), max(worst_rel, res["max_rel_err"])
                if reply["stream_ms"] > wall_ms + 1.0:
                    raise WorkerFailure("rejected", f"timer_inconsistent: reported {reply['stream_ms']:.3f} ms > parent wall "
                                        f"{wall_ms:.3f} ms", "timer_inconsistent")
                sides[side].append(reply)
    return _verdict(session, sides, cand, worst_abs, worst_rel)


def _mismatch(session: GpuSession, timer: Timer, res: dict[str, Any]) -> GpuVerdict:
    if timer is session.ref:
        raise RuntimeError(f"task {session.spec.task_id}: the reference's own output differs between processes: {res['error']}")
    return GpuVerdict("rejected", f"timed_output_mismatch: {res['error']}", "timed_output_mismatch", res["max_abs_err"], res["max_rel_err"])


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


def _verdict(session: GpuSession, sides: dict[str, list[dict[str, Any]]], cand: Timer, worst_abs: float, worst_rel: float) -> GpuVerdict:
    spec, settings = session.spec, session.settings
    ref_r, cand_r = sides["ref"], sides["cand"]
    flags: list[str] = []
    pre_excess = _median(cand_r, "pre_ms") - _median(ref_r, "pre_ms")
    if pre_excess > max(PRE_START_FLOOR_MS, PRE_START_SHARE * _median(ref_r, "pre_ms")):
        return GpuVerdict("rejected", f"untimed_gpu_work: {pre_excess:.3f} ms of GPU work queued before each call's start beyond "
                       "the L2 flush", "untimed_gpu_work", worst_abs, worst_rel)
    ref_proc, cand_proc = session.ref.proc, cand.proc  # type: ignore[union-attr]
    if cand_proc.cpu_clock is not None and ref_proc.cpu_clock is not None:
        excess = cand_proc.cpu_idle_ns - ref_proc.cpu_idle_ns
        if excess > max(BACKGROUND_FLOOR_NS, BACKGROUND_SHARE * cand_proc.cpu_in_ns):
            return GpuVerdict("rejected", f"background_work: the candidate's process used {cand_proc.cpu_idle_ns / 1e6:.1f} ms of CPU "
                           f"between its requests (the reference's {ref_proc.cpu_idle_ns / 1e6:.1f} ms): work done off the clock",
                           "background_work", worst_abs, worst_rel)
    tail = lambda rs: float(np.median([r["full_ms"] - r["stream_ms"] for r in rs]))  # noqa: E731
    own = call_times(cand_r, False)
    device_wide = tail(cand_r) - tail(ref_r) > max(OTHER_STREAM_FLOOR_MS, OTHER_STREAM_SHARE * float(np.median(own)))
    if device_wide:
        flags.append("other_stream_work")
    ref_ms, cand_ms = call_times(ref_r, device_wide), call_times(cand_r, device_wide)
    stats = speedup_stats(ref_ms, cand_ms, settings.bootstrap, derive_seed(settings.seed, spec.task_id, "bootstrap", len(ref_ms)))
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
    return GpuVerdict("ok", "", "", worst_abs, worst_rel, stats, flags, extra=extra)


# ----------------------------------------------------------------------------- task entry point


def default_build_root(cache_dir: Path | None, settings: EvalSettings) -> Path:
    if settings.build_cache_dir:
        return Path(settings.build_cache_dir).expanduser()
    if cache_dir is not None:
        return Path(cache_dir) / "cuda_builds"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vegtts" / "cuda_builds"


def _evaluate_with_retime(session: GpuSession, program: str, proc: WorkerProcess) -> GpuVerdict:
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


class CudaDevice:
    """Task.py's device on the visible GPUs: one thread per GPU pulls programs from a queue.

    `dry_device="cpu"` runs the same orchestration with CPU processes (tests on machines without a
    GPU; never used for results).  `details`, if given, receives one dict per evaluated program
    (GPU, build time, whether the build cache was warm, the timing details of `_verdict`).
    """

    flags_reference_copies = False  # the CUDA records never carried the flag (the analysis derives it)

    def __init__(self, spec: TaskSpec, settings: EvalSettings, cache_dir: Path | None, gpus: list[str] | None,
                 dry_device: str | None, details: list[dict[str, Any]] | None) -> None:
        gpus = gpus if gpus is not None else visible_gpus()
        if settings.gpus:
            gpus = gpus[: settings.gpus]
        if not gpus and dry_device is None:
            raise RuntimeError("evaluation.device is 'cuda' but no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi -L)")
        if dry_device is not None and not gpus:
            gpus = ["dry0"]
        self.spec, self.settings, self.gpus, self.dry_device, self.details = spec, settings, gpus, dry_device, details
        self.hardware = f"cuda:{gpu_name()}" if dry_device is None else f"dry:{dry_device}"
        self.progress_label = f"evaluate {spec.task_id} on {len(gpus)} GPU(s)"
        self.build_root = default_build_root(Path(cache_dir) if cache_dir is not None else None, settings)
        self.build_root.mkdir(parents=True, exist_ok=True)

    def run(self, programs: list[str], finish: Finish) -> None:
        todo: queue.Queue[str] = queue.Queue()
        for program in programs:
            todo.put(program)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def take() -> str | None:
            try:
                return todo.get_nowait()
            except queue.Empty:
                return None

        def gpu_loop(gpu: str) -> None:
            spec, settings, session = self.spec, self.settings, None
            program = take()
            try:
                while program is not None:
                    if session is None:
                        session = get_session(spec, settings, gpu, self.build_root, self.dry_device)
                    t0 = time.monotonic()
                    # a started worker; its replacement starts now, while this candidate is evaluated
                    v = _evaluate_with_retime(session, program, take_spare(gpu, settings.timeout_s, self.dry_device))
                    if session.ref is None or not session.ref.proc.alive():
                        session.restart_reference_timer()
                    v.seconds = time.monotonic() - t0
                    rec = finish(program, v)
                    if self.details is not None:
                        with lock:
                            self.details.append({"code_sha256": rec.code_sha256, "gpu": gpu, "build_s": v.build_s,
                                                 "seconds": rec.eval_seconds, "session_start_s": session.start_s, **v.extra})
                    program = take()
            except BaseException as exc:  # noqa: BLE001 - reported after the threads join
                errors.append(exc)

        threads = [threading.Thread(target=gpu_loop, args=(g,), name=f"vegtts-gpu-{g}") for g in self.gpus]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


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
    """`evaluate_task` for device "cuda" (`CudaDevice`)."""
    device = CudaDevice(spec, settings, cache_dir, gpus, dry_device, details)
    return evaluate_programs(device, spec, candidates, settings, cache_dir)
