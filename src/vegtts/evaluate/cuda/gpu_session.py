"""Per task and GPU, the trusted processes a CUDA evaluation keeps: the keeper and the reference timer.

A `GpuSession` is kept across calls for the same task on a GPU (`get_session`); started workers
wait per GPU for the next program of any task (`take_spare`), so a worker's start costs no time.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vegtts.tasks.runtime as task_runtime
from vegtts.evaluate.cuda.build_cache import build_dir_for, build_env
from vegtts.evaluate.cuda.processes import WorkerFailure, WorkerProcess, toolchain_id
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.task import derive_seed
from vegtts.records import TaskSpec

log = logging.getLogger(__name__)

_REF_MODULE = "vegtts_reference_task"
SPARES_PER_GPU = 3  # started workers waiting per GPU: each needs ~3 s to start, a warm candidate ~1 s


def trial_seeds(spec: TaskSpec, settings: EvalSettings) -> list[int]:
    return [derive_seed(settings.seed, spec.task_id, "trial", i) for i in range(settings.correctness_trials)]


@dataclass
class Timer:
    """A timing worker with its slot pair in the keeper."""

    proc: WorkerProcess
    slot_id: int = 0
    build_s: float = float("nan")
    hold: bool = False
    empty_ms: float = 0.0  # START -> END of an empty call in this worker (the event pair's own cost)


class GpuSession:
    """The keeper and the reference timer of one task on one GPU."""

    def __init__(self, spec: TaskSpec, settings: EvalSettings, gpu: str, build_root: Path, dry_device: str | None) -> None:
        self.spec, self.settings, self.gpu, self.build_root, self.dry_device = spec, settings, gpu, build_root, dry_device
        self.key = session_key(spec, settings, dry_device)
        module = task_runtime.load_reference_module(spec)
        self.init_seed = derive_seed(settings.seed, spec.task_id, "init")
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
