"""The CPU device of the evaluator (`CpuDevice`): correctness and paired timing in fresh children.

task.py runs the sequence around it (distinct programs, the cache, the static checks, records).

Per candidate (docs/evaluator.md, "Timing protocol"):
1. a candidate child runs setup and the correctness trials (public seeds; the parent compares);
2. if it passes, a fresh pair of children, candidate and reference, gets the same history in
   turn (setup, the same trials), so both reach timing alike;
3. under the machine-wide timing lock both move to the timing cpu and run the warm-up and then
   ABBA-ordered rounds on inputs from a secret of this process; after every batch the parent
   reads sampled elements of every call's outputs from both children's memory and compares them;
4. each round is charged, per side, the CPU the child's whole process used in its timed request
   (threads == 1; the wall time for threads > 1) plus whatever CPU it used outside its timed
   requests beyond the other side's (the other side's excess is charged to it likewise): work
   hidden in untimed requests or background threads is put back on the clock;
5. the speedup is exp(median of per-round log ratios) with an order-statistic interval; rounds
   are added (up to twice the planned number) while that interval is wide;
6. a verdict that rests on timing (a timing guard's rejection, an excessive speedup, a reference
   time far from the task's A/A control) is measured again in fresh children before it stands;
   where a timing guard's rejection meets an `ok`, a third measurement decides.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from vegtts.evaluate.compare import Comparison, compare_outputs, same_values
from vegtts.evaluate.guards import parent_check
from vegtts.evaluate.paired_timing import TIMING_GUARDS, cpu_split, on_reference, time_candidate
from vegtts.evaluate.reference import ReferenceContext
from vegtts.evaluate.server import ForkServer, Launcher, shared_fork_server
from vegtts.evaluate.session import ChildFailure, ChildSession
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.task import Finish, Verdict, timing_lock
from vegtts.io import hardware_key
from vegtts.records import TaskSpec

log = logging.getLogger(__name__)

REFERENCE_JUMP = 2.0  # a reference time this far (x or /) from the task's A/A control is re-measured
REFERENCE_COPY_BODY = "class ModelNew(Model):\n    pass\n"


def rests_on_timing(v: Verdict) -> bool:
    """A rejection that rests on a timing measurement (re-measured before it stands)."""
    return v.phase == "timing" and (v.guard in TIMING_GUARDS or v.status == "timeout")


def _session(
    launcher: Launcher,
    settings: EvalSettings,
    affinity: list[int] | None = None,
    timeout_s: float | None = None,
    phases: int = 1,
    extra_mb: int = 0,
) -> ChildSession:
    """A fresh child; `phases` sessions' worth of CPU time (one child serves correctness and timing)."""
    timeout_s = timeout_s or settings.timeout_s
    return ChildSession(
        launcher,
        threads=settings.threads,
        memory_limit_mb=settings.memory_limit_mb + extra_mb,
        timeout_s=timeout_s,
        affinity=affinity,
        cpu_timeout_s=timeout_s * phases,
    )


def check_correctness(ctx: ReferenceContext, child: ChildSession, program: str) -> Verdict:
    """Setup and every correctness trial in `child`; the parent compares.  Leaves `child` set up."""
    spec = ctx.spec
    cmp = Comparison(True)
    try:
        reply = child.request(ctx.setup_request("cand", program))
        child.confinement = dict(reply.get("confinement") or {})
        for t, trial in enumerate(ctx.trials):
            reply = child.request(trial.payload)
            if not same_values(trial.inputs, reply.get("inputs")):
                return Verdict("incorrect", f"trial {t}: forward modified its inputs", max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err)
            trial_cmp = compare_outputs(trial.output, reply.get("output"), spec.atol, spec.rtol, where="varied trial output" if trial.varied else "output",
                                        atol_scaled=spec.atol_scaled or trial.varied)
            cmp = cmp.merge(trial_cmp)
            if not trial_cmp.ok:
                return Verdict("incorrect", f"trial {t}: {trial_cmp.error}", max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err)
            reason = parent_check(trial.flags, reply)
            if reason:
                return Verdict("rejected", reason, reason.split(":", 1)[0], cmp.max_abs_err, cmp.max_rel_err)
    except ChildFailure as f:
        return Verdict(f.status, f.error, f.guard, cmp.max_abs_err if cmp.max_abs_err else math.nan, cmp.max_rel_err if cmp.max_rel_err else math.nan)
    return Verdict("ok", max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err)


def pair_history(ctx: ReferenceContext, ref: ChildSession, cand: ChildSession, program: str, ref_first: bool) -> None:
    """Two fresh children for the timing get the same history, step by step in turn: setup, then
    every correctness trial (acknowledged, not sent back: correctness was decided in another
    child).  Their heaps grow at the same moments, in the same way, so they reach timing alike.
    Which child goes first at each step is drawn per measurement (`ref_first`), so whatever going
    first does (where the kernel puts the pages it hands out) is noise, not a bias of the task.
    Raises ChildFailure for the candidate, ReferenceFailure for the reference."""
    steps = [(ctx.setup_request("cand", program), ctx.setup_request("ref", ctx.spec.source))]
    steps += [(trial.ack_payload, trial.ack_payload) for trial in ctx.trials]
    for cand_msg, ref_msg in steps:
        for side in ((0, 1) if ref_first else (1, 0)):
            if side == 0:
                on_reference(ctx.spec, ref.request, ref_msg)
            else:
                cand.request(cand_msg)


# ----------------------------------------------------------------------------- one candidate


def _no_strays(verdict: Verdict, child: ChildSession) -> Verdict:
    if verdict.status != "ok":
        return verdict
    strays = child.stray_processes()
    if strays:
        return replace(verdict, status="rejected", guard="background_process", timing=None,
                       error=f"background_process: {len(strays)} process(es) started by the candidate still running")
    return verdict


@contextlib.contextmanager
def _this_thread_on(cpus: list[int] | None) -> Iterator[None]:
    """Run the calling thread on `cpus` for a while (None: leave it where it is).

    With several workers, one candidate's correctness overlaps another's timing; the parent's
    receives and comparisons for the trials then competed with the timed children for their cpu.
    """
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure_once(ctx: ReferenceContext, program: str, launcher: Launcher) -> Verdict:
    """One full measurement in fresh children: the candidate's correctness in a child of its own;
    if it passed, a fresh pair (candidate and reference child) with the same history, timed
    under the machine's lock.

    `seconds` counts its own phases, not the wait for the timing lock.
    """
    settings = ctx.settings
    _, correctness_cpus = cpu_split(settings.threads)
    extra = ctx.extra_mb()
    t0 = time.monotonic()
    with _session(launcher, settings, correctness_cpus, extra_mb=extra) as checker:
        checker.role = "cand"
        with _this_thread_on(correctness_cpus):  # the parent's side of the trials stays off the timing cpus
            verdict = _no_strays(check_correctness(ctx, checker, program), checker)
    if verdict.status != "ok":
        verdict.phase, verdict.seconds = "correctness", time.monotonic() - t0
        return verdict
    t1 = t2 = t3 = time.monotonic()
    ref_first = bool(secrets.randbits(1))  # which child is forked and prepared first: drawn, not fixed
    with contextlib.ExitStack() as stack:
        make_cand = lambda: _session(launcher, settings, correctness_cpus, phases=2, extra_mb=extra)  # noqa: E731
        make_ref = lambda: _session(launcher, settings, correctness_cpus, 2 * settings.timeout_s + 30, extra_mb=extra)  # noqa: E731
        if ref_first:
            ref = stack.enter_context(make_ref())
            cand = stack.enter_context(make_cand())
        else:
            cand = stack.enter_context(make_cand())
            ref = stack.enter_context(make_ref())
        cand.role, ref.role = "cand", "ref"
        try:
            with _this_thread_on(correctness_cpus):
                pair_history(ctx, ref, cand, program, ref_first)
        except ChildFailure as f:
            timed = Verdict(f.status, f"while preparing the timing: {f.error}", f.guard, phase="timing")
        else:
            t1 = time.monotonic()
            with timing_lock():
                t2 = time.monotonic()
                timed = time_candidate(ctx, ref, cand)
                t3 = time.monotonic()
            if timed.status == "ok":
                timed = _no_strays(timed, cand)
                if timed.status != "ok":
                    timed.phase = "timing"
    seconds = time.monotonic() - t0 - (t2 - t1)
    log.debug("task %s: correctness + pair history %.2f s, lock wait %.2f s, timing %.2f s, close %.2f s",
              ctx.spec.task_id, t1 - t0, t2 - t1, t3 - t2, time.monotonic() - t3)
    if timed.status != "ok":
        timed.max_abs_err, timed.max_rel_err, timed.seconds = verdict.max_abs_err, verdict.max_rel_err, seconds
        return timed
    verdict.timing, verdict.phase, verdict.seconds = timed.timing, "timing", seconds
    return verdict


def _remeasure_reason(ctx: ReferenceContext, v: Verdict) -> str | None:
    """Why a first measurement's verdict may not stand without a second one (None: it stands)."""
    if rests_on_timing(v):
        return v.guard or v.status
    if v.status != "ok" or v.timing is None:
        return None
    if v.timing.speedup > ctx.settings.excessive_speedup:
        return "excessive_speedup"
    control = ctx.control
    if control is not None and control.ref_time_ms > 0:
        ratio = v.timing.ref_time_ms / control.ref_time_ms
        if ratio > REFERENCE_JUMP or ratio < 1 / REFERENCE_JUMP:
            return "reference_time_jump"
    return None


def needs_third_measurement(first: Verdict, second: Verdict) -> bool:
    """The first measurement rejected hidden work (a timing guard) and the second came back `ok`.

    The second `ok` may rest on work that one measurement's rounds did not show (the charge takes
    only consistent excess), so it does not overrule the first alone: a third measurement decides,
    and the rejection stands (confirmed) when it agrees with the first.
    """
    return first.phase == "timing" and first.guard in TIMING_GUARDS and second.status == "ok"


def _settle(ctx: ReferenceContext, first: Verdict, second: Verdict, reason: str) -> Verdict:
    """The verdict of a re-measured candidate: the last measurement (`second`), flagged with why it was taken."""
    if reason == "excessive_speedup":
        flags = ["excessive_speedup_retimed"]
        if second.status == "ok" and second.timing is not None:
            log.warning("task %s: speedup %.1fx re-timed in fresh children: %.1fx", ctx.spec.task_id,
                        first.timing.speedup if first.timing else math.nan, second.timing.speedup)
            if second.timing.speedup > ctx.settings.excessive_speedup:
                flags.append("excessive_speedup")
    else:
        flags = ["remeasured", f"first_{reason}"]
        if reason == "reference_time_jump" and _remeasure_reason(ctx, second) == "reference_time_jump":
            flags.append("reference_time_jump")
        log.info("task %s: %s in the first measurement; re-measured in fresh children: %s", ctx.spec.task_id, reason,
                 second.status if second.status != "ok" else f"ok, {second.timing.speedup:.2f}x" if second.timing else "ok")
    second.flags = flags + second.flags
    # a timing-based rejection stands (and is cached) only when the re-measure confirms it
    if rests_on_timing(second) and not (rests_on_timing(first) and first.guard == second.guard and first.status == second.status):
        second.cacheable = False
    return second


def ensure_control(ctx: ReferenceContext, launcher: Launcher) -> None:
    """The task's A/A control: the reference submitted as a candidate, measured like every candidate.

    Its interval should cover 1; where it does not, it is measured once more, and if that fails
    too every record of the task gets the flag `aa_control_failed` (the machine's timing is biased
    right now: read its speedups with care).  Its reference time is the yardstick for
    `reference_time_jump`.
    """
    with ctx._control_lock:
        if ctx.control is not None or ctx.control_flags:
            return
        program = ctx.spec.source.rstrip("\n") + "\n\n\n" + REFERENCE_COPY_BODY
        for _attempt in range(2):
            v = measure_once(ctx, program, launcher)
            if v.status != "ok" or v.timing is None:
                log.warning("task %s: the A/A control did not time (%s: %s)", ctx.spec.task_id, v.status, v.error[:200])
                ctx.control_flags = ["aa_control_failed"]
                return
            t = v.timing
            log.info("task %s: A/A control %.3f [%.3f, %.3f] (reference %.3f ms/call)", ctx.spec.task_id, t.speedup,
                     t.speedup_lo, t.speedup_hi, t.ref_time_ms)
            if t.speedup_lo <= 1.0 <= t.speedup_hi:
                ctx.control = t
                return
            ctx.control = t
        log.warning("task %s: the A/A control's interval excluded 1 twice: timing on this machine is biased now", ctx.spec.task_id)
        ctx.control_flags = ["aa_control_failed"]


def evaluate_candidate(ctx: ReferenceContext, program: str, launcher: Launcher) -> Verdict:
    """Correctness and paired timing in fresh children; a verdict resting on timing is measured again.

    `seconds` counts the candidate's own measurements, not the wait for the timing lock nor the
    task's A/A control.
    """
    verdict = measure_once(ctx, program, launcher)
    if verdict.status == "ok" or verdict.phase == "timing":
        ensure_control(ctx, launcher)
        reason = _remeasure_reason(ctx, verdict)
        if reason:
            first, second = verdict, measure_once(ctx, program, launcher)
            seconds = first.seconds + second.seconds
            if needs_third_measurement(first, second):
                second = measure_once(ctx, program, launcher)
                second.flags = ["measured_thrice", *second.flags]
                seconds += second.seconds
            verdict = _settle(ctx, first, second, reason)
            verdict.seconds = seconds
        if verdict.status == "ok":
            verdict.flags = verdict.flags + ctx.control_flags
    return verdict


_last_context: dict[str, ReferenceContext] = {}


def _reference_context(spec: TaskSpec, settings: EvalSettings) -> ReferenceContext:
    """The last task's context is kept, so repeated calls for one task reuse its inputs."""
    key = f"{spec.source_sha256}:{settings.settings_hash()}:{spec.atol}:{spec.rtol}:{spec.atol_scaled}:{spec.varied_inputs}"
    if key not in _last_context:
        for old in _last_context.values():
            old.close()
        _last_context.clear()
        _last_context[key] = ReferenceContext.build(spec, settings)
    return _last_context[key]


def control_summary(spec: TaskSpec, settings: EvalSettings) -> dict[str, Any] | None:
    """The task's A/A control as measured in this process (None if none was needed or kept)."""
    for key, ctx in _last_context.items():
        if key.startswith(f"{spec.source_sha256}:{settings.settings_hash()}:") and (ctx.control is not None or ctx.control_flags):
            t = ctx.control
            return {"speedup": t.speedup if t else None, "speedup_lo": t.speedup_lo if t else None,
                    "speedup_hi": t.speedup_hi if t else None, "ref_time_ms": t.ref_time_ms if t else None,
                    "n_rounds": t.n_rounds if t else None, "flags": list(ctx.control_flags),
                    "definition": "the reference itself measured as a candidate when the task's first candidate reached timing"}
    return None


@atexit.register
def _close_contexts() -> None:
    for ctx in _last_context.values():
        ctx.close()


class CpuDevice:
    """Task.py's device on this machine's CPUs: sandboxed children from `launcher` (the shared warm
    fork server unless given), candidates on `max_parallel` worker threads whose correctness
    overlaps another's timing; timing itself is serialised by the machine-wide lock."""

    flags_reference_copies = True

    def __init__(self, spec: TaskSpec, settings: EvalSettings, launcher: Launcher | None = None) -> None:
        self.spec, self.settings, self.launcher = spec, settings, launcher
        self.hardware = hardware_key()
        self.progress_label = f"evaluate {spec.task_id}"

    def run(self, programs: list[str], finish: Finish) -> None:
        launcher = self.launcher or shared_fork_server()
        if isinstance(launcher, ForkServer):  # forks and kills stay off the timing cpus too
            launcher.pin(cpu_split(self.settings.threads)[1])
        ctx = _reference_context(self.spec, self.settings)

        def run(program: str) -> None:
            finish(program, evaluate_candidate(ctx, program, launcher))

        with ThreadPoolExecutor(max_workers=max(1, min(self.settings.max_parallel, len(programs)))) as pool:
            for future in [pool.submit(run, p) for p in programs]:
                future.result()
