"""evaluate_task: static checks, correctness, paired timing in fresh children, re-measuring, caching.

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
   time far from the task's A/A control) is measured again in fresh children before it stands.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import itertools
import logging
import math
import os
import random
import secrets
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vegtts.evaluate import cache as eval_cache
from vegtts.evaluate.child import aliasing
from vegtts.evaluate.compare import Comparison, compare_outputs, same_values
from vegtts.evaluate.guards import is_reference_copy, parent_check, static_check
from vegtts.evaluate.input_pool import InputPool
from vegtts.evaluate.protocol import Encoded
from vegtts.evaluate.readback import BadDescription, compare_calls, draw_positions, parse_leaves, read_sampled
from vegtts.evaluate.server import ForkServer, Launcher, shared_fork_server
from vegtts.evaluate.session import ChildFailure, ChildSession, Measured, encode_request
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.stats import TimingStats, interval_width, median_interval_rank, paired_speedup_stats
from vegtts.io import hardware_key, sha256_text
from vegtts.records import EvalRecord, TaskSpec
from vegtts.tasks import runtime as task_runtime

log = logging.getLogger(__name__)

TIMING_LOCK_PATH = Path(os.environ.get("VEGTTS_TIMING_LOCK", "/tmp/vegtts-timing-cpu.lock"))
_PAYLOAD_CACHE_BYTES = 512 << 20  # keep encoded timing batches of a task in memory up to this size
POOL_MAX_BYTES = 1 << 30  # timing inputs of a task (both sides) in shared memory up to this size
# hidden work is always charged; it is also *rejected* when it is large (untimed_work_reason):
UNTIMED_REJECT_FLOOR_NS = 2_000_000
UNTIMED_REJECT_SHARE = 0.5  # ... of the candidate's own median timed CPU per round
BACKGROUND_FLOOR_NS = 10_000_000  # CPU between requests (summed over rounds) below this is housekeeping
BACKGROUND_SHARE = 0.05  # ... nor below this share of the candidate's CPU in its timed requests
CPU_BUDGET_SLACK, CPU_BUDGET_FLOOR_NS = 1.10, 2_000_000  # threads > 1: CPU in runs <= threads x wall x slack + floor
TIMING_NICE = -20  # both timing children and the parent's clock thread, while a candidate is timed
ADAPTIVE_WIDTH = 0.2  # more rounds (two at a time) while the interval is wider than this (log units) ...
ADAPTIVE_FACTOR = 2  # ... up to this multiple of timing_rounds
REFERENCE_JUMP = 2.0  # a reference time this far (x or /) from the task's A/A control is re-measured
TIMING_GUARDS = ("untimed_work", "background_work", "cpu_budget")  # rejections that rest on timing

_RUN_SECRET = secrets.token_hex(16)  # timing inputs and checked positions: unknown to any child
_timings = itertools.count()

REFERENCE_COPY_BODY = "class ModelNew(Model):\n    pass\n"


class ReferenceError_(RuntimeError, ValueError):
    """The task's reference itself fails: no candidate can be judged (a ValueError: the CLI reports
    it as one clear line about the task, not a traceback)."""


def derive_seed(root: int, *labels: Any) -> int:
    digest = hashlib.sha256(repr((root, *labels)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _seed_python_rngs(seed: int) -> None:
    """Python's and numpy's RNGs too (tasks.runtime seeds torch's), for get_inputs that use them."""
    random.seed(seed)
    np.random.seed(seed)


def load_reference(spec: TaskSpec) -> types.ModuleType:
    """The trusted reference source (never a candidate) as a fresh module, via the task loader."""
    module = task_runtime.load_reference_module(spec)
    for name in ("Model", "get_inputs", "get_init_inputs"):
        if not hasattr(module, name):
            raise ReferenceError_(f"task {spec.task_id}: the task source defines no {name}")
    return module


def make_inputs(module: types.ModuleType, seed: int) -> list[Any]:
    _seed_python_rngs(seed)
    return task_runtime.make_inputs(module, seed)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


@dataclass
class Trial:
    inputs: list[Any]  # pristine copy kept by the parent
    output: Any  # reference output
    flags: dict[str, bool]  # reference aliasing facts
    payload: Encoded  # the forward request
    ack_payload: Encoded  # the same request for the pair's reference child (replies just ok)
    varied: bool = False  # the varied trial: its absolute tolerance scales with its output (compare.py)


@dataclass
class ReferenceContext:
    """Everything trusted about one task: computed once in the parent, shared by all candidates."""

    spec: TaskSpec
    settings: EvalSettings
    module: types.ModuleType
    init_inputs: list[Any]
    init_seed: int
    state: dict[str, torch.Tensor]
    trials: list[Trial]
    _timing_payloads: dict[int, Encoded] = field(default_factory=dict)
    _payload_bytes: int = 0
    pool: InputPool | None = None
    control: TimingStats | None = None  # the task's A/A control (the reference timed against itself)
    control_flags: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _control_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self._lock:
            if self.pool is not None:
                self.pool.close()
                self.pool = None

    @classmethod
    def build(cls, spec: TaskSpec, settings: EvalSettings) -> ReferenceContext:
        module = load_reference(spec)
        init_seed = derive_seed(settings.seed, "init")
        _seed_python_rngs(init_seed)
        init_inputs = task_runtime.make_init_inputs(module, init_seed)
        with _torch_threads(settings.threads), torch.no_grad():
            # not task_runtime.make_model: that one switches to eval mode, while the children (and
            # KernelBench) run the module as constructed (train mode, e.g. batch-norm statistics)
            _seed_python_rngs(init_seed)
            torch.manual_seed(init_seed)
            model = module.Model(*init_inputs)
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            trials, previous = [], []
            kept: list[Any] = []  # alive until all trials ran, as in the child: no address is reused
            mutates = False
            varied = None  # the extra trial on signed, wider inputs (docs/evaluator.md, "Correctness")
            if settings.varied_inputs and spec.varied_inputs:
                varied = task_runtime.varied_trial_inputs(module, model, derive_seed(settings.seed, "correctness", "varied"), make_inputs)
            for t in range(settings.correctness_trials + (varied is not None)):
                inputs = make_inputs(module, derive_seed(settings.seed, "correctness", t)) if t < settings.correctness_trials else varied[0]
                working = task_runtime.clone_tree(inputs)
                try:
                    output = model(*working)
                except Exception as exc:
                    raise ReferenceError_(f"task {spec.task_id}: the reference forward fails: {exc}") from exc
                mutates = mutates or not same_values(working, inputs)
                flags = aliasing(working, output, previous)
                previous.extend(t_.untyped_storage().data_ptr() for t_ in _flat_tensors(output))
                kept.append(output)
                output = task_runtime.clone_tree(output)
                payload = encode_request({"op": "forward", "inputs": inputs})
                ack = encode_request({"op": "forward", "inputs": inputs, "reply": "ack"})
                trials.append(Trial(inputs, output, flags, payload, ack, varied=t >= settings.correctness_trials))
        ctx = cls(spec, settings, module, init_inputs, init_seed, state, trials)
        if not mutates:  # pooled inputs are read-only pages; a mutating reference gets socket copies
            ctx.pool = ctx._build_pool()
        return ctx

    def timing_batch(self, round_idx: int) -> list[list[Any]]:
        """Inputs of one timed batch (round -1 = warm-up): fresh per call, from a secret of this
        process, so no child can know or precompute them (correctness trials keep public seeds)."""
        n = self.settings.warmup_calls if round_idx < 0 else self.settings.calls_per_round
        return [make_inputs(self.module, derive_seed(self.settings.seed, "timing", _RUN_SECRET, round_idx, c)) for c in range(n)]

    def _build_pool(self) -> InputPool | None:
        """Planned rounds (and the warm-up) in shared memory, if they fit POOL_MAX_BYTES; rounds
        added later join the pool while it still fits, else they travel through the socket."""
        rounds = ([-1] if self.settings.warmup_calls > 0 else []) + list(range(self.settings.timing_rounds))
        first = self.timing_batch(rounds[0])
        per_call = sum(t.numel() * t.element_size() for call in first for t in _flat_tensors(call)) / max(1, len(first))
        calls = self.settings.warmup_calls + self.settings.timing_rounds * self.settings.calls_per_round
        if 2 * per_call * calls > POOL_MAX_BYTES:
            log.info("task %s: timing inputs too large for the shared pool; sending them per round", self.spec.task_id)
            return None
        try:
            return InputPool.build({r: (first if r == rounds[0] else self.timing_batch(r)) for r in rounds})
        except (TypeError, OSError, AttributeError) as exc:
            log.info("task %s: timing inputs not pooled (%s); sending them per round", self.spec.task_id, exc)
            return None

    def load(self, child: ChildSession, copy: int, round_idx: int) -> Measured:
        """Give `child` copy `copy` (0 or 1) of a timed round's inputs (-1 = warm-up), releasing its last batch."""
        pool = self.pool
        if pool is not None:
            with self._lock:
                if round_idx not in pool.layout and 2 * pool.round_bytes * (len(pool.layout) + 1) <= POOL_MAX_BYTES:
                    pool.add_round(round_idx, self.timing_batch(round_idx))  # an added round (wide interval)
            if round_idx in pool.layout:
                return child.measured_request(pool.load_request(round_idx), pool.fd_sender(copy, round_idx))
        return child.measured_request(self.batch_request(round_idx))

    def extra_mb(self) -> int:
        """Address space a timing child needs for mapped inputs (two rounds at a time)."""
        return 0 if self.pool is None else 2 * (self.pool.round_bytes >> 20) + 2

    def setup_request(self, role: str, source: str) -> Encoded:
        return encode_request(
            {
                "op": "setup",
                "role": role,
                "source": source,
                "init_inputs": self.init_inputs,
                "init_seed": self.init_seed,
                "state": self.state,
                "threads": self.settings.threads,
                # the child traps Model.forward between the reference part and the candidate's code
                "trap_reference": "" if role == "ref" or self.settings.allow_reference_calls else self.spec.source,
            }
        )

    def batch_request(self, round_idx: int) -> Encoded:
        """Inputs of one timed batch sent through the socket (tasks whose inputs are not pooled)."""
        if round_idx in self._timing_payloads:
            return self._timing_payloads[round_idx]
        payload = encode_request({"op": "load", "batch": self.timing_batch(round_idx)})
        if self._payload_bytes + payload.nbytes <= _PAYLOAD_CACHE_BYTES:
            self._timing_payloads[round_idx] = payload
            self._payload_bytes += payload.nbytes
        return payload


def _flat_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _flat_tensors(x)]
    return []


# ----------------------------------------------------------------------------- phases


@dataclass
class Verdict:
    status: str
    error: str = ""
    guard: str = ""
    max_abs_err: float = math.nan
    max_rel_err: float = math.nan
    timing: TimingStats | None = None
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time spent on this candidate (its own phases, not queueing)
    cacheable: bool = True  # False: a timing-based verdict that a re-measure did not confirm
    phase: str = ""  # "correctness" or "timing": where a non-ok verdict arose

    @property
    def timing_based(self) -> bool:
        """A rejection that rests on a timing measurement (re-measured before it stands)."""
        return self.phase == "timing" and (self.guard in TIMING_GUARDS or self.status == "timeout")


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
    Raises ChildFailure for the candidate, ReferenceError_ for the reference."""
    steps = [(ctx.setup_request("cand", program), ctx.setup_request("ref", ctx.spec.source))]
    steps += [(trial.ack_payload, trial.ack_payload) for trial in ctx.trials]
    for cand_msg, ref_msg in steps:
        for side in ((0, 1) if ref_first else (1, 0)):
            if side == 0:
                _on_ref(ctx.spec, ref.request, ref_msg)
            else:
                cand.request(cand_msg)


def cpu_split(threads: int) -> tuple[list[int] | None, list[int] | None]:
    """(timing cpus, correctness cpus): timing gets the last `threads` cpus, correctness the rest.

    With no cpu to spare (cpus <= threads) correctness is not pinned and shares the timing cpus.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(cpus) <= threads:
        return cpus, None
    return cpus[-threads:], cpus[:-threads]


def _on_ref(spec: TaskSpec, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ChildFailure as f:
        raise ReferenceError_(f"task {spec.task_id}: reference timing child failed: {f}") from f


@contextlib.contextmanager
def timing_priority(*children: ChildSession) -> Iterator[None]:
    """Both timing children and this (clock) thread at TIMING_NICE while a candidate is timed.

    On a shared machine the timing cpu is contended by other users' jobs (nice >= 0); at nice
    -20 the timed children get nearly all of it.  Needs root; otherwise a no-op.  Correctness
    trials keep the normal priority.
    """
    me = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, me)
    for child in children:
        child.set_nice(TIMING_NICE)
    try:
        os.setpriority(os.PRIO_PROCESS, me, TIMING_NICE)
    except OSError:
        pass
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, me, before)
        except OSError:
            pass


# ----------------------------------------------------------------------------- timing


@dataclass
class SideRounds:
    """What the parent measured of one child over the timed rounds (ns, one entry per round)."""

    run_cpu: list[int] = field(default_factory=list)  # process CPU during the timed request
    run_wall: list[int] = field(default_factory=list)  # wall time of the timed request
    untimed_cpu: list[int] = field(default_factory=list)  # process CPU from this run's end to the next run's start
    request_cpu: list[int] = field(default_factory=list)  # ... of which inside untimed requests (loads)
    cpu_marks: list[tuple[int, int]] = field(default_factory=list)  # (start, end) CPU of every run
    pre_gap: int = 0  # CPU between the warm-up run and round 0 (charged to round 0)
    pre_requests: int = 0
    cpu_ok: bool = True  # False where the OS gave no process CPU clock (then wall times are used)


class _Rejected(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.error)
        self.verdict = verdict


def time_candidate(ctx: ReferenceContext, ref: ChildSession, cand: ChildSession) -> Verdict:
    """Paired rounds between two set-up children (fresh reference child, candidate child).

    Call under the machine's timing lock.  Raises ReferenceError_ if the reference child fails
    (an evaluator problem, not the candidate's).
    """
    timing_cpus, _ = cpu_split(ctx.settings.threads)
    ref.pin(timing_cpus)
    cand.pin(timing_cpus)
    with timing_priority(ref, cand):
        try:
            return _time_rounds(ctx, ref, cand)
        except _Rejected as r:
            return r.verdict
        except ChildFailure as f:
            return Verdict(f.status, f"during timing: {f.error}", f.guard, phase="timing")


def _run_batch(ctx: ReferenceContext, child: ChildSession, calls: int) -> tuple[Measured, list[Any]]:
    """One timed batch; returns the measurement and the parsed description of every call's outputs."""
    nonce = secrets.randbits(62)
    is_ref = child.role == "ref"
    m = _on_ref(ctx.spec, child.measured_request, {"op": "run", "nonce": nonce}) if is_ref else child.measured_request({"op": "run", "nonce": nonce})
    try:
        if m.reply.get("nonce") != nonce:
            raise BadDescription("the reply does not carry the request's nonce: it was not the harness's")
        described = m.reply.get("outputs")
        if not isinstance(described, list) or len(described) != calls:
            raise BadDescription(f"the reply describes {len(described) if isinstance(described, list) else 'no'} calls, not {calls}")
        leaves = [parse_leaves(d) for d in described]
    except BadDescription as exc:
        if is_ref:
            raise ReferenceError_(f"task {ctx.spec.task_id}: the reference child's reply is malformed: {exc}") from exc
        raise _Rejected(Verdict("rejected", f"harness_reply: {exc}", "harness_reply", phase="timing")) from None
    return m, leaves


def _check_batch(ctx: ReferenceContext, label: str, ref: ChildSession, cand: ChildSession,
                 ref_leaves: list[Any], cand_leaves: list[Any], rng: np.random.Generator) -> None:
    """Sampled elements of every call's outputs, read from both children's memory, compared."""
    for i, (r_leaves, c_leaves) in enumerate(zip(ref_leaves, cand_leaves)):
        positions = draw_positions(r_leaves, rng)
        ref_values = read_sampled(ref.pid, r_leaves, positions)
        if ref_values is None:
            raise ReferenceError_(f"task {ctx.spec.task_id}: the reference child's outputs could not be read")
        if len(c_leaves) == len(r_leaves) and all(c.shape == r.shape for c, r in zip(c_leaves, r_leaves)):
            cand_values = read_sampled(cand.pid, c_leaves, positions)
            if cand_values is None:
                raise _Rejected(Verdict("rejected", f"output_unreadable: {label} call {i}: the candidate's outputs are not "
                                        f"readable where its reply says they are", "output_unreadable", phase="timing"))
        else:
            cand_values = [None] * len(c_leaves)
        cmp = compare_calls(r_leaves, c_leaves, ref_values, cand_values, ctx.spec.atol, ctx.spec.rtol, f"{label} call {i}",
                            atol_scaled=ctx.spec.atol_scaled)
        if not cmp.ok:
            raise _Rejected(Verdict("rejected", f"timed_output_mismatch: {cmp.error}", "timed_output_mismatch", phase="timing"))


def _time_rounds(ctx: ReferenceContext, ref: ChildSession, cand: ChildSession) -> Verdict:
    settings = ctx.settings
    cand.extend(settings.timeout_s)
    # the reference child outlives the candidate's deadline, so a slow candidate times out, not the reference
    ref.extend(2 * settings.timeout_s + 30)
    rng = np.random.default_rng(derive_seed(settings.seed, "check", _RUN_SECRET, next(_timings)))
    sides = {0: SideRounds(), 1: SideRounds()}
    children = {0: ref, 1: cand}

    def load(side: int, round_idx: int) -> int:
        # the two copies of a round's inputs swap sides every round: whatever differs between the
        # copies (where their pages lie) falls on both sides alike over an ABBA pair
        child, copy = children[side], side ^ (round_idx & 1 if round_idx >= 0 else 0)
        m = _on_ref(ctx.spec, ctx.load, child, copy, round_idx) if side == 0 else ctx.load(child, copy, round_idx)
        return m.cpu_ns or 0

    def end(side: int) -> int:
        child = children[side]
        msg = {"op": "end"}
        m = _on_ref(ctx.spec, child.measured_request, msg) if side == 0 else child.measured_request(msg)
        return m.cpu_ns or 0

    def batch(label: str, order: tuple[int, int], calls: int) -> dict[int, Measured]:
        measured, leaves = {}, {}
        for side in order:
            measured[side], leaves[side] = _run_batch(ctx, children[side], calls)
        _check_batch(ctx, label, ref, cand, leaves[0], leaves[1], rng)
        return measured

    warm_end: dict[int, int] = {}
    if settings.warmup_calls > 0:
        for side in (0, 1):
            load(side, -1)
        for side, m in batch("warm-up", (0, 1), settings.warmup_calls).items():
            warm_end[side] = m.cpu_after or 0
    pre_requests = {side: load(side, 0) for side in _order(0)}
    planned, most = settings.timing_rounds, ADAPTIVE_FACTOR * settings.timing_rounds
    r = 0
    while True:
        for side, m in batch(f"round {r}", _order(r), settings.calls_per_round).items():
            s = sides[side]
            if r == 0 and side in warm_end and m.cpu_before is not None:
                # the warm-up's untimed gap (it loads round 0) is charged to round 0
                s.pre_gap, s.pre_requests = m.cpu_before - warm_end[side], pre_requests[side]
            if m.cpu_ns is None:
                s.cpu_ok = False
            s.run_cpu.append(m.cpu_ns or 0)
            s.run_wall.append(m.wall_ns)
            s.cpu_marks.append((m.cpu_before or 0, m.cpu_after or 0))
        r += 1
        if r < planned:
            more = True
        elif r >= most:
            more = False
        elif (r - planned) % 2 == 1:
            more = True  # added rounds come in ABBA pairs
        else:
            more = _too_wide(sides, settings)
        if not more:
            break
        for side in _order(r):
            sides[side].request_cpu.append(load(side, r))
    for side in (0, 1):
        sides[side].request_cpu.append(end(side))
        final = children[side].cpu_ns() or 0
        _close_gaps(sides[side], final)
    return _verdict_from_rounds(ctx, sides[0], sides[1])


def _order(r: int) -> tuple[int, int]:
    """ABBA: the reference runs first in even rounds, the candidate in odd ones (side 0 = reference)."""
    return (0, 1) if r % 2 == 0 else (1, 0)


def _close_gaps(s: SideRounds, final_cpu: int) -> None:
    """untimed_cpu[r] = CPU from the end of run r to the start of run r + 1 (the last: to `final_cpu`)."""
    starts = [a for a, _ in s.cpu_marks[1:]] + [final_cpu]
    s.untimed_cpu = [max(0, nxt - end) for (_, end), nxt in zip(s.cpu_marks, starts)]
    if s.untimed_cpu:
        s.untimed_cpu[0] += max(0, s.pre_gap)
        s.request_cpu[0] += s.pre_requests


def _too_wide(sides: dict[int, SideRounds], settings: EvalSettings) -> bool:
    ref, cand = sides[0], sides[1]
    n = len(cand.run_cpu)
    no_gaps = [0] * n  # the untimed CPU of a round is known once the next round started; timed work decides here
    a, b = charged_rounds(replace(ref, untimed_cpu=no_gaps), replace(cand, untimed_cpu=no_gaps), settings.threads)
    if min(a + b) <= 0:
        return False
    return interval_width(paired_speedup_stats(a, b)) > ADAPTIVE_WIDTH


def charged_rounds(ref: SideRounds, cand: SideRounds, threads: int) -> tuple[list[float], list[float]]:
    """Per round and side: its timed work (process CPU of the run for threads == 1, wall time
    otherwise) plus hidden work: the CPU a side used outside its timed requests beyond the other
    side's (divided by `threads`), where that excess is consistent over the rounds.

    Consistent means the order-statistic 95% interval of the per-round excess lies on one side of
    0; then its median is charged to that side in every round.  Charging each round's own excess
    instead let the untimed CPU's noise (page faults, a slow load: tens of ms in single rounds on
    a quiet machine) into every ratio and left a 2.5x rewrite of a 17 ms reference with an
    interval reaching 0.6; work hidden in most rounds is charged either way, and work hidden in a
    few rounds moves only those rounds, which the median over rounds does not follow.  Symmetric:
    an A/A pair is exchangeable, so the charge adds no bias."""
    n = len(cand.run_cpu)
    by_cpu = threads == 1 and ref.cpu_ok and cand.cpu_ok
    t_ref = ref.run_cpu if by_cpu else ref.run_wall
    t_cand = cand.run_cpu if by_cpu else cand.run_wall
    charge = consistent_excess(cand.untimed_cpu[:n], ref.untimed_cpu[:n]) / threads
    a = [float(t_ref[r] + max(0.0, -charge)) for r in range(n)]
    b = [float(t_cand[r] + max(0.0, charge)) for r in range(n)]
    return a, b


def consistent_excess(cand_ns: list[int], ref_ns: list[int]) -> float:
    """Median of cand - ref per round when its order-statistic 95% interval excludes 0, else 0."""
    n = min(len(cand_ns), len(ref_ns))
    if n == 0:
        return 0.0
    excess = np.sort(np.asarray(cand_ns[:n], dtype=float) - np.asarray(ref_ns[:n], dtype=float))
    k = median_interval_rank(n)
    if excess[k - 1] > 0 or excess[n - k] < 0:
        return float(np.median(excess))
    return 0.0


def untimed_work_reason(ref: SideRounds, cand: SideRounds) -> str | None:
    """Reject hidden work that is large (it is charged to the candidate's time in any case).

    Two parts of the CPU a child uses outside its timed requests:
    - between requests, where a child has nothing to do (~0 for the reference): rejected as
      `background_work` when the candidate's sum exceeds the reference's by more than
      max(BACKGROUND_FLOOR_NS, BACKGROUND_SHARE x its CPU in timed requests);
    - inside its untimed requests (loads): rejected as `untimed_work` when the per-round excess
      over the reference is consistent (the lower order-statistic bound of the excess is above 0)
      and its median is above max(UNTIMED_REJECT_FLOOR_NS, UNTIMED_REJECT_SHARE x its own
      median timed CPU per round).
    Both use the process CPU clock, which other processes' load does not inflate.
    """
    n = len(cand.untimed_cpu)
    if n == 0 or not (ref.cpu_ok and cand.cpu_ok):
        return None
    between_c = sum(u - q for u, q in zip(cand.untimed_cpu, cand.request_cpu))
    between_r = sum(u - q for u, q in zip(ref.untimed_cpu, ref.request_cpu))
    allowed = max(BACKGROUND_FLOOR_NS, BACKGROUND_SHARE * sum(cand.run_cpu))
    if between_c - between_r > allowed:
        return (f"background_work: the candidate's process used {between_c / 1e6:.1f} ms of CPU between its requests, when "
                f"it had nothing to serve (the reference's {between_r / 1e6:.1f} ms; allowed excess {allowed / 1e6:.1f} ms): "
                f"work done off the clock (it is charged to its time in any case)")
    if n < 4:
        return None
    excess = np.sort(np.asarray(cand.request_cpu, dtype=float) - np.asarray(ref.request_cpu, dtype=float))
    k = median_interval_rank(n)
    median = float(np.median(excess))
    allowed = max(UNTIMED_REJECT_FLOOR_NS, UNTIMED_REJECT_SHARE * float(np.median(cand.run_cpu)))
    if excess[k - 1] > 0 and median > allowed:
        return (f"untimed_work: the candidate's untimed requests (input loads) used {median / 1e6:.2f} ms of CPU per round "
                f"beyond the reference's, in {int((excess > 0).sum())} of {n} rounds (allowed {allowed / 1e6:.2f} ms): work "
                f"hidden outside the clock (it is charged to its time in any case)")
    return None


def cpu_budget_reason(cand: SideRounds, threads: int) -> str | None:
    """threads > 1: more CPU in its timed requests than `threads` cpus allow over their wall time."""
    if threads == 1:
        return None  # timed by its CPU clock: extra threads are charged, not hidden
    used, wall = sum(cand.run_cpu), sum(cand.run_wall)
    budget = threads * wall * CPU_BUDGET_SLACK + CPU_BUDGET_FLOOR_NS * len(cand.run_wall)
    if used > budget:
        return (f"cpu_budget: the candidate used {used / 1e6:.1f} ms of CPU in {wall / 1e6:.1f} ms of timed requests with a "
                f"budget of {threads} thread(s)")
    return None


def _verdict_from_rounds(ctx: ReferenceContext, ref: SideRounds, cand: SideRounds) -> Verdict:
    settings = ctx.settings
    for name, side in (("reference", ref), ("candidate", cand)):
        if side.cpu_ok and min(side.run_cpu, default=1) <= 0:
            # seen once in 80 honest evaluations on a loaded machine: a batch whose CPU clock did
            # not advance is not this child's clock; both sides are then timed by wall time
            log.warning("task %s: the %s child's CPU clock did not advance over a timed batch; timing by wall time",
                        ctx.spec.task_id, name)
            side.cpu_ok = False
    for reason in (untimed_work_reason(ref, cand), cpu_budget_reason(cand, settings.threads)):
        if reason:
            return Verdict("rejected", reason, reason.split(":", 1)[0], phase="timing")
    a, b = charged_rounds(ref, cand, settings.threads)
    calls = settings.calls_per_round
    stats = paired_speedup_stats([x / calls / 1e6 for x in a], [x / calls / 1e6 for x in b],
                                 resolution=settings.timing_resolution)
    log.debug("task %s: timed %d rounds: speedup %.3f [%.3f, %.3f]; wall ref %.3f / cand %.3f ms per batch",
              ctx.spec.task_id, stats.n_rounds, stats.speedup, stats.speedup_lo, stats.speedup_hi,
              np.median(ref.run_wall) / 1e6, np.median(cand.run_wall) / 1e6)
    return Verdict("ok", timing=stats, phase="timing")


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
    if v.timing_based:
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


def _settle(ctx: ReferenceContext, first: Verdict, second: Verdict, reason: str) -> Verdict:
    """The verdict of a re-measured candidate: the second measurement, flagged with why it was taken."""
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
    if second.timing_based and not (first.timing_based and first.guard == second.guard and first.status == second.status):
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
            first_seconds = verdict.seconds
            verdict = _settle(ctx, verdict, measure_once(ctx, program, launcher), reason)
            verdict.seconds += first_seconds
        if verdict.status == "ok":
            verdict.flags = verdict.flags + ctx.control_flags
    return verdict


def verdict_record(spec: TaskSpec, code_sha: str, v: Any, seconds: float, hardware: str | None = None) -> EvalRecord:
    """The stored record of one verdict (CPU `Verdict` or the CUDA evaluator's, same fields)."""
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
        hardware=hardware or hardware_key(),
        eval_seconds=round(seconds, 4),
    )
    if v.timing is not None and v.status == "ok":
        t = v.timing
        rec.ref_time_ms, rec.cand_time_ms = t.ref_time_ms, t.cand_time_ms
        rec.ref_time_spread, rec.cand_time_spread = t.ref_time_spread, t.cand_time_spread
        rec.speedup, rec.speedup_lo, rec.speedup_hi = t.speedup, t.speedup_lo, t.speedup_hi
        rec.n_timing_rounds = t.n_rounds
    return rec


def _pre_check(spec: TaskSpec, program: str, settings: EvalSettings) -> Verdict | None:
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


def evaluate_task(
    spec: TaskSpec,
    candidates: list[tuple[str, str]],
    settings: EvalSettings,
    cache_dir: Path | None = None,
    *,
    launcher: Launcher | None = None,
) -> list[EvalRecord]:
    """Evaluate (code_sha256, program) pairs for one task; one EvalRecord per pair, in order.

    Identical programs are evaluated once; verdicts are cached per candidate under `cache_dir`.
    `launcher` defaults to the shared warm fork server (benchmarks pass a SpawnLauncher).
    """
    if settings.device == "cuda":  # CUDA/Triton candidates: evaluate/cuda/, one worker thread per GPU
        from vegtts.evaluate.cuda.evaluator import evaluate_task_cuda

        return evaluate_task_cuda(spec, candidates, settings, cache_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    by_program: dict[str, list[int]] = {}
    for i, (_, program) in enumerate(candidates):
        by_program.setdefault(program, []).append(i)
    results: dict[str, tuple[EvalRecord, bool]] = {}  # program -> (record, from cache)
    pending: list[str] = []
    for program in by_program:
        prog_sha = sha256_text(program) if program else ""
        path = eval_cache.record_path(cache_dir, spec, settings, prog_sha) if cache_dir is not None and program else None
        cached = eval_cache.load(path) if path is not None else None
        if cached is not None:
            results[program] = (cached, True)
        else:
            pending.append(program)

    def store(program: str, verdict: Verdict) -> None:
        prog_sha = sha256_text(program) if program else ""
        if program and is_reference_copy(program, spec.source):
            verdict.flags = ["reference_copy"] + verdict.flags
        record = verdict_record(spec, prog_sha, verdict, verdict.seconds)
        if not verdict.cacheable:
            log.info("task %s: %s not cached: a timing-based verdict the re-measure did not confirm", spec.task_id, prog_sha[:12])
        elif cache_dir is not None and program:
            eval_cache.store(eval_cache.record_path(cache_dir, spec, settings, prog_sha), record)
        results[program] = (record, False)
        bar.update(1)

    bar = tqdm(total=len(pending), desc=f"evaluate {spec.task_id}", unit="cand", disable=None, leave=False)
    to_run: list[str] = []
    for program in pending:
        t0 = time.monotonic()
        pre = _pre_check(spec, program, settings)
        if pre is not None:
            pre.seconds = time.monotonic() - t0
            store(program, pre)
        else:
            to_run.append(program)
    if to_run:
        launcher = launcher or shared_fork_server()
        if isinstance(launcher, ForkServer):  # forks and kills stay off the timing cpus too
            launcher.pin(cpu_split(settings.threads)[1])
        ctx = _reference_context(spec, settings)

        def run(program: str) -> None:
            store(program, evaluate_candidate(ctx, program, launcher))

        # workers pipeline: correctness of one candidate overlaps timing of another (on other cpus);
        # timing itself is serialised by the machine-wide lock
        with ThreadPoolExecutor(max_workers=max(1, min(settings.max_parallel, len(to_run)))) as pool:
            for future in [pool.submit(run, p) for p in to_run]:
                future.result()
    bar.close()

    out = []
    for code_sha, program in candidates:
        record, from_cache = results[program]
        if code_sha and program and code_sha != record.code_sha256:
            log.warning("task %s: given code_sha256 %s is not the sha256 of its program", spec.task_id, code_sha[:12])
        out.append(replace(record, code_sha256=code_sha or record.code_sha256, cached=from_cache))
    return out
