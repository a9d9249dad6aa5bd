"""One task's evaluation, the same sequence on every device.

`evaluate_programs` takes the (code_sha256, program) pairs of one task and
1. evaluates each distinct program once,
2. takes what the evaluation cache already holds (`evaluate.cache`),
3. judges without running anything what it can (`pre_check`: no code, a syntax error, the
   static guards),
4. hands the rest to the device (`Device.run`: `runner.CpuDevice`, `cuda.evaluator.CudaDevice`),
5. stores each verdict as an `EvalRecord` (and in the cache) and returns one record per pair,
   in the callers' order.

Only step 4 differs between devices.  Also here, because both devices use them: the seeds
derived from the settings' seed, the machine-wide timing lock, the record of a verdict.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

import vegtts.evaluate.cache as eval_cache
from vegtts.evaluate.guards import is_reference_copy, static_check
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.stats import TimingStats
from vegtts.io import sha256_text
from vegtts.records import EvalRecord, TaskSpec

log = logging.getLogger(__name__)

TIMING_LOCK_PATH = Path(os.environ.get("VEGTTS_TIMING_LOCK", "/tmp/vegtts-timing-cpu.lock"))


@dataclass
class Verdict:
    """What a device concluded about one program; stored as an EvalRecord (`verdict_record`)."""

    status: str
    error: str = ""
    guard: str = ""
    max_abs_err: float = math.nan
    max_rel_err: float = math.nan
    timing: TimingStats | None = None
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time spent on this program (its own phases, not queueing)
    cacheable: bool = True  # False: a timing-based verdict that a re-measure did not confirm
    phase: str = ""  # "correctness" or "timing": where a non-ok verdict arose


Finish = Callable[[str, Verdict], EvalRecord]


class Device(Protocol):
    """The part of a task's evaluation that differs between devices."""

    hardware: str  # the `hardware` of its records
    progress_label: str
    flags_reference_copies: bool  # add the flag `reference_copy` to copies of the reference

    def run(self, programs: list[str], finish: Finish) -> None:
        """Evaluate `programs` (distinct, none cached, each past the pre-check); call
        finish(program, verdict) once per program, from any thread."""


def derive_seed(root: int, *labels: Any) -> int:
    digest = hashlib.sha256(repr((root, *labels)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@contextlib.contextmanager
def timing_lock(path: Path = TIMING_LOCK_PATH) -> Iterator[None]:
    """Serialises timing across every evaluating process on this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def verdict_record(spec: TaskSpec, code_sha: str, v: Verdict, hardware: str) -> EvalRecord:
    """The stored record of one verdict."""
    rec = EvalRecord(
        task_id=spec.task_id,
        code_sha256=code_sha,
        status=v.status,
        correct=v.status == "ok",
        error=v.error[:2000],
        guard=v.guard or (v.error.split(":", 1)[0] if v.status == "rejected" else ""),
        max_abs_err=float(v.max_abs_err),
        max_rel_err=float(v.max_rel_err),
        flags=",".join(v.flags),
        hardware=hardware,
        eval_seconds=round(v.seconds, 4),
    )
    if v.timing is not None and v.status == "ok":
        t = v.timing
        rec.ref_time_ms, rec.cand_time_ms = t.ref_time_ms, t.cand_time_ms
        rec.ref_time_spread, rec.cand_time_spread = t.ref_time_spread, t.cand_time_spread
        rec.speedup, rec.speedup_lo, rec.speedup_hi = t.speedup, t.speedup_lo, t.speedup_hi
        rec.n_timing_rounds = t.n_rounds
    return rec


def pre_check(spec: TaskSpec, program: str, settings: EvalSettings) -> Verdict | None:
    """Verdicts reached without running anything: no code, syntax error, static guards."""
    if not program.strip():
        return Verdict("no_code", "no program")
    try:
        # compile, not only parse: some errors (a repeated keyword argument, `return` outside a
        # function, ...) are raised by the compiler after a clean parse; nothing is executed
        compile(program, "<candidate>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return Verdict("syntax_error", f"SyntaxError: {exc.msg} (line {exc.lineno})")
    except (ValueError, RecursionError, MemoryError) as exc:
        return Verdict("syntax_error", f"{type(exc).__name__}: {exc}"[:500])
    reason = static_check(program, spec.source, settings.allow_reference_calls)
    if reason:
        return Verdict("rejected", reason, reason.split(":", 1)[0])
    return None


def evaluate_programs(
    device: Device, spec: TaskSpec, candidates: list[tuple[str, str]], settings: EvalSettings, cache_dir: Path | None
) -> list[EvalRecord]:
    """One EvalRecord per (code_sha256, program) pair, in order (the module docstring's sequence)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    results: dict[str, tuple[EvalRecord, bool]] = {}  # program -> (record, from cache)
    pending: list[str] = []
    for program in dict.fromkeys(p for _, p in candidates):
        path = eval_cache.record_path(cache_dir, spec, settings, sha256_text(program)) if cache_dir is not None and program else None
        cached = eval_cache.load(path) if path is not None else None
        if cached is not None:
            results[program] = (cached, True)
        else:
            pending.append(program)
    bar = tqdm(total=len(pending), desc=device.progress_label, unit="cand", disable=None, leave=False)
    lock = threading.Lock()

    def finish(program: str, verdict: Verdict) -> EvalRecord:
        prog_sha = sha256_text(program) if program else ""
        if device.flags_reference_copies and program and is_reference_copy(program, spec.source):
            verdict.flags = ["reference_copy"] + verdict.flags
        record = verdict_record(spec, prog_sha, verdict, device.hardware)
        if not verdict.cacheable:
            log.info("task %s: %s not cached: a timing-based verdict the re-measure did not confirm", spec.task_id, prog_sha[:12])
        elif cache_dir is not None and program:
            eval_cache.store(eval_cache.record_path(cache_dir, spec, settings, prog_sha), record)
        with lock:
            results[program] = (record, False)
            bar.update(1)
        return record

    to_run: list[str] = []
    for program in pending:
        t0 = time.monotonic()
        verdict = pre_check(spec, program, settings)
        if verdict is None:
            to_run.append(program)
        else:
            verdict.seconds = time.monotonic() - t0
            finish(program, verdict)
    if to_run:
        device.run(to_run, finish)
    bar.close()
    return [_as_given(spec, code_sha, *results[program]) for code_sha, program in candidates]


def _as_given(spec: TaskSpec, code_sha: str, record: EvalRecord, from_cache: bool) -> EvalRecord:
    """The record under the caller's code_sha256 (where given), marked cached or not."""
    if code_sha and record.code_sha256 and code_sha != record.code_sha256:
        log.warning("task %s: given code_sha256 %s is not the sha256 of its program", spec.task_id, code_sha[:12])
    return replace(record, code_sha256=code_sha or record.code_sha256, cached=from_cache)
