"""evaluate_task: static checks, parallel correctness, serialised interleaved timing, caching."""

from __future__ import annotations

import ast
import contextlib
import copy
import fcntl
import hashlib
import logging
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from vegtts.evaluate import cache as eval_cache
from vegtts.evaluate.child import aliasing
from vegtts.evaluate.compare import Comparison, compare_outputs, same_values
from vegtts.evaluate.guards import parent_check, static_check
from vegtts.evaluate.server import Launcher, shared_fork_server
from vegtts.evaluate.protocol import Encoded
from vegtts.evaluate.session import ChildFailure, ChildSession, encode_request
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.stats import TimingStats, speedup_stats
from vegtts.io import hardware_key, sha256_text
from vegtts.records import EvalRecord, TaskSpec

log = logging.getLogger(__name__)

TIMING_LOCK_PATH = Path(os.environ.get("VEGTTS_TIMING_LOCK", "/tmp/vegtts-timing-cpu.lock"))
_PAYLOAD_CACHE_BYTES = 512 << 20  # keep encoded timing batches of a task in memory up to this size
TIMED_CHECK_ELEMENTS = 65536  # elements per output tensor compared after every timed batch


class ReferenceError_(RuntimeError):
    """The task's reference itself fails: no candidate can be judged."""


def derive_seed(root: int, *labels: Any) -> int:
    digest = hashlib.sha256(repr((root, *labels)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def load_reference_namespace(source: str) -> dict[str, Any]:
    """Exec the trusted reference source (never a candidate) into a fresh namespace."""
    namespace: dict[str, Any] = {"__name__": "__vegtts_reference__"}
    exec(compile(source, "<reference>", "exec"), namespace)  # noqa: S102 - trusted task source
    for name in ("Model", "get_inputs", "get_init_inputs"):
        if name not in namespace:
            raise ReferenceError_(f"the task source defines no {name}")
    return namespace


def make_inputs(namespace: dict[str, Any], seed: int) -> list[Any]:
    _seed_everything(seed)
    return list(namespace["get_inputs"]())


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(x) for x in obj)
    return copy.deepcopy(obj)


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


@dataclass
class ReferenceContext:
    """Everything trusted about one task: computed once in the parent, shared by all candidates."""

    spec: TaskSpec
    settings: EvalSettings
    namespace: dict[str, Any]
    init_inputs: list[Any]
    init_seed: int
    state: dict[str, torch.Tensor]
    trials: list[Trial]
    _timing_payloads: dict[int, Encoded] = field(default_factory=dict)
    _payload_bytes: int = 0

    @classmethod
    def build(cls, spec: TaskSpec, settings: EvalSettings) -> "ReferenceContext":
        namespace = load_reference_namespace(spec.source)
        init_seed = derive_seed(settings.seed, "init")
        _seed_everything(init_seed)
        init_inputs = list(namespace["get_init_inputs"]())
        with _torch_threads(settings.threads), torch.no_grad():
            _seed_everything(init_seed)
            model = namespace["Model"](*init_inputs)
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            trials, previous = [], []
            for t in range(settings.correctness_trials):
                inputs = make_inputs(namespace, derive_seed(settings.seed, "correctness", t))
                working = _clone(inputs)
                try:
                    output = model(*working)
                except Exception as exc:
                    raise ReferenceError_(f"task {spec.task_id}: the reference forward fails: {exc}") from exc
                flags = aliasing(working, output, previous)
                previous.extend(t_.untyped_storage().data_ptr() for t_ in _flat_tensors(output))
                output = _clone(output)
                payload = encode_request({"op": "forward", "inputs": inputs})
                trials.append(Trial(inputs, output, flags, payload))
        return cls(spec, settings, namespace, init_inputs, init_seed, state, trials)

    def output_indices(self, round_idx: int) -> list[torch.Tensor | None]:
        """Random element positions per output tensor for a timed batch, drawn after the batch ran."""
        g = torch.Generator().manual_seed(derive_seed(self.settings.seed, "check", round_idx))
        out: list[torch.Tensor | None] = []
        for t in _flat_tensors(self.trials[0].output):
            n = t.numel()
            out.append(None if n <= TIMED_CHECK_ELEMENTS else torch.randint(n, (TIMED_CHECK_ELEMENTS,), generator=g))
        return out

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
            }
        )

    def batch_request(self, round_idx: int) -> Encoded:
        """Inputs of one timed batch (round -1 = warm-up), fresh per call, identical for both sides."""
        if round_idx in self._timing_payloads:
            return self._timing_payloads[round_idx]
        n = self.settings.warmup_calls if round_idx < 0 else self.settings.calls_per_round
        batch = [make_inputs(self.namespace, derive_seed(self.settings.seed, "timing", round_idx, c)) for c in range(n)]
        payload = encode_request({"op": "load", "batch": batch})
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


def _session(
    launcher: Launcher, settings: EvalSettings, affinity: list[int] | None = None, timeout_s: float | None = None
) -> ChildSession:
    return ChildSession(
        launcher,
        threads=settings.threads,
        memory_limit_mb=settings.memory_limit_mb,
        timeout_s=timeout_s or settings.timeout_s,
        affinity=affinity,
    )


def check_correctness(ctx: ReferenceContext, program: str, launcher: Launcher) -> Verdict:
    """All correctness trials in one fresh child; the parent compares."""
    spec = ctx.spec
    cmp = Comparison(True)
    try:
        with _session(launcher, ctx.settings) as child:
            child.request(ctx.setup_request("cand", program))
            for t, trial in enumerate(ctx.trials):
                reply = child.request(trial.payload)
                if not same_values(trial.inputs, reply.get("inputs")):
                    return Verdict("incorrect", f"trial {t}: forward modified its inputs", max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err)
                trial_cmp = compare_outputs(trial.output, reply.get("output"), spec.atol, spec.rtol)
                cmp = cmp.merge(trial_cmp)
                if not trial_cmp.ok:
                    return Verdict("incorrect", f"trial {t}: {trial_cmp.error}", max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err)
                reason = parent_check(trial.flags, reply)
                if reason:
                    return Verdict("rejected", reason, reason.split(":", 1)[0], cmp.max_abs_err, cmp.max_rel_err)
    except ChildFailure as f:
        return Verdict(f.status, f.error, f.guard, cmp.max_abs_err if cmp.max_abs_err else math.nan, cmp.max_rel_err if cmp.max_rel_err else math.nan)
    return Verdict("ok", max_abs_err=cmp.max_abs_err, max_rel_err=cmp.max_rel_err)


def _timing_cpus(threads: int) -> list[int] | None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus[-threads:] if len(cpus) >= threads else cpus


def time_candidate(ctx: ReferenceContext, program: str, launcher: Launcher) -> Verdict:
    """Interleaved rounds (ref, cand / cand, ref / ...) in two fresh children, under the machine lock.

    Raises ReferenceError_ if the reference child fails (an evaluator problem, not the candidate's).
    """
    settings, spec = ctx.settings, ctx.spec
    cpus = _timing_cpus(settings.threads)
    ref_ms: list[float] = []
    cand_ms: list[float] = []
    # the reference child outlives the candidate's deadline, so a slow candidate times out, not the reference
    ref_timeout = 2 * settings.timeout_s + 30
    with timing_lock(), _session(launcher, settings, cpus, ref_timeout) as ref, _session(launcher, settings, cpus) as cand:

        def on_ref(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except ChildFailure as f:
                raise ReferenceError_(f"task {spec.task_id}: reference timing child failed: {f}") from f

        on_ref(ref.request, ctx.setup_request("ref", spec.source))
        try:
            cand.request(ctx.setup_request("cand", program))
            if settings.warmup_calls > 0:
                warm = ctx.batch_request(-1)
                for child in (ref, cand):
                    (on_ref if child is ref else _call)(child.request, warm)
                    (on_ref if child is ref else _call)(child.request, {"op": "run"})
            for r in range(settings.timing_rounds):
                payload = ctx.batch_request(r)
                on_ref(ref.request, payload)
                cand.request(payload)
                order = (ref, cand) if r % 2 == 0 else (cand, ref)
                for child in order:
                    if child is ref:
                        _, ns = on_ref(ref.timed_request, {"op": "run"})
                        ref_ms.append(ns / 1e6 / settings.calls_per_round)
                    else:
                        _, ns = cand.timed_request({"op": "run"})
                        cand_ms.append(ns / 1e6 / settings.calls_per_round)
                check = encode_request({"op": "last", "indices": ctx.output_indices(r)})
                ref_out = on_ref(ref.request, check)
                cand_out = cand.request(check)
                cmp = compare_outputs(ref_out["sampled"], cand_out.get("sampled"), spec.atol, spec.rtol)
                if ref_out["shapes"] != cand_out.get("shapes"):
                    cmp = Comparison(False, error=f"output shapes {cand_out.get('shapes')} != reference {ref_out['shapes']}")
                if not cmp.ok:
                    return Verdict("rejected", f"timed_output_mismatch: round {r}: {cmp.error}", "timed_output_mismatch")
        except ChildFailure as f:
            return Verdict(f.status, f"during timing: {f.error}", f.guard)
    stats = speedup_stats(ref_ms, cand_ms, settings.bootstrap, derive_seed(settings.seed, "bootstrap"))
    return Verdict("ok", timing=stats)


def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _verdict_to_record(spec: TaskSpec, code_sha: str, v: Verdict, seconds: float) -> EvalRecord:
    rec = EvalRecord(
        task_id=spec.task_id,
        code_sha256=code_sha,
        status=v.status,
        correct=v.status == "ok",
        error=v.error[:2000],
        guard=v.guard,
        max_abs_err=float(v.max_abs_err),
        max_rel_err=float(v.max_rel_err),
        flags=",".join(v.flags),
        hardware=hardware_key(),
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
        ast.parse(program)
    except SyntaxError as exc:
        return Verdict("syntax_error", f"SyntaxError: {exc.msg} (line {exc.lineno})")
    except (ValueError, RecursionError, MemoryError) as exc:
        return Verdict("syntax_error", f"{type(exc).__name__}: {exc}"[:500])
    reason = static_check(program, spec.source, settings.allow_reference_calls)
    if reason:
        return Verdict("rejected", reason, reason.split(":", 1)[0])
    return None


def _finish_timing(ctx: ReferenceContext, program: str, launcher: Launcher, verdict: Verdict) -> Verdict:
    t0 = time.monotonic()
    try:
        return _time_and_retime(ctx, program, launcher, verdict)
    finally:
        verdict.seconds += time.monotonic() - t0


def _time_and_retime(ctx: ReferenceContext, program: str, launcher: Launcher, verdict: Verdict) -> Verdict:
    timed = time_candidate(ctx, program, launcher)
    if timed.status == "ok" and timed.timing is not None and timed.timing.speedup > ctx.settings.excessive_speedup:
        first = timed.timing.speedup
        retimed = time_candidate(ctx, program, launcher)
        flags = ["excessive_speedup_retimed"]
        if retimed.status == "ok" and retimed.timing is not None:
            log.warning("task %s: speedup %.1fx re-timed in fresh children: %.1fx", ctx.spec.task_id, first, retimed.timing.speedup)
            if retimed.timing.speedup > ctx.settings.excessive_speedup:
                flags.append("excessive_speedup")
        timed = retimed
        timed.flags = flags + timed.flags
    if timed.status != "ok":
        timed.max_abs_err, timed.max_rel_err = verdict.max_abs_err, verdict.max_rel_err
        timed.seconds = verdict.seconds
        return timed
    verdict.timing = timed.timing
    verdict.flags = verdict.flags + timed.flags
    return verdict


_last_context: dict[str, ReferenceContext] = {}


def _reference_context(spec: TaskSpec, settings: EvalSettings) -> ReferenceContext:
    """The last task's context is kept, so repeated calls for one task reuse its inputs."""
    key = f"{spec.source_sha256}:{settings.settings_hash()}:{spec.atol}:{spec.rtol}"
    if key not in _last_context:
        _last_context.clear()
        _last_context[key] = ReferenceContext.build(spec, settings)
    return _last_context[key]


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
        record = _verdict_to_record(spec, prog_sha, verdict, verdict.seconds)
        if cache_dir is not None and program:
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
        ctx = _reference_context(spec, settings)

        def correctness(program: str) -> Verdict:
            t0 = time.monotonic()
            verdict = check_correctness(ctx, program, launcher)
            verdict.seconds = time.monotonic() - t0
            if verdict.status != "ok":
                store(program, verdict)
            return verdict

        # correctness in parallel first; timing afterwards, one candidate at a time
        with ThreadPoolExecutor(max_workers=max(1, min(settings.max_parallel, len(to_run)))) as pool:
            verdicts = list(pool.map(correctness, to_run))
        for program, verdict in zip(to_run, verdicts):
            if verdict.status == "ok":
                store(program, _finish_timing(ctx, program, launcher, verdict))
    bar.close()

    out = []
    for code_sha, program in candidates:
        record, from_cache = results[program]
        if code_sha and program and code_sha != record.code_sha256:
            log.warning("task %s: given code_sha256 %s is not the sha256 of its program", spec.task_id, code_sha[:12])
        out.append(replace(record, code_sha256=code_sha or record.code_sha256, cached=from_cache))
    return out
