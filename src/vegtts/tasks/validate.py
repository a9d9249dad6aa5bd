"""Screening a problem: can it tell a correct candidate from a degenerate one, and can it run here?

A problem is useless (or gameable) if a constant answer, the input itself or all zeros passes the
evaluator's correctness check, if it ignores one of its inputs, or if it is not reproducible from
the seeds.  `screen_task` runs the reference (never candidate code) the way the evaluator does:
the model as constructed (train mode, `tasks.runtime.build_reference`), every global RNG seeded
before each `get_inputs()` (`tasks.runtime.fresh_inputs`), forwards under `torch.no_grad()`,
outputs compared with the evaluator's own rule (`evaluate.compare.compare_outputs` with the
task's tolerances).  Each finding is a string "<check>: <detail>"; [] means the problem is fine.

By default each problem runs in a child process forked from a warm server (`tasks.probe`), with a
memory budget and a time limit: a problem that does not fit, hangs or crashes becomes a finding,
never the end of the screen.  Before anything is allocated, a meta-device run estimates the
memory the screen needs; a problem over the budget is reported without running it.

Checks (in order; after a load/inputs/forward failure only that is reported):
  load              the module must exec and `Model(*get_init_inputs())` build
  inputs            get_inputs() must run
  forward           the reference forward must run (in train mode) and return tensors
  nonfinite_output  NaN or inf in the reference output
  mutates_input     the reference forward changes its inputs in place
  nondeterministic  two forwards on the same model and inputs differ (e.g. train-mode dropout),
                    or rebuilding model and inputs from the same seeds differs
  constant_output   a constant program passes: the output of another seed, or the mean of the
                    trial outputs, is within tolerance of every trial's output (trials: TRIAL_SEEDS
                    plus, where the evaluator has one, its trial on varied, signed inputs)
  tiny_output       an all-zeros output passes every trial
  identity_output   the output equals one of the inputs within tolerance on every trial
                    (`return x` passes; e.g. ReLU on inputs in [0, 1))
  ignored_input     perturbing one tensor input alone leaves the output within tolerance
                    (floats get Gaussian noise of the input's own scale, other dtypes a roll)
  timing            the reference's time per call, on fresh inputs per call as the evaluator
                    times it (fastest of TIMING_ROUNDS rounds of CALLS_PER_ROUND calls), outside
                    TIMING_RANGE_MS
Findings that mean "could not be screened" (UNSCREENED): memory (over the budget, estimated or
hit), timeout, crash (the child died), screen_error (a failure of the screen itself).

GPU-sized problems (suite builtin_gpu, or tagged "gpu") are screened on the CPU with their batch
constants (tasks.shapes roles) set to SCREEN_BATCH (the checks above do not depend on the batch
size; at full size the six builtin_gpu problems took 95 s of CPU), and without the timing check,
whose range is for a CPU forward.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vegtts.records import TaskSpec
from vegtts.tasks.probe import is_memory_error, meta_footprint, run_isolated
from vegtts.tasks.reference_timing import POOL_MAX_BYTES, TIMING_SEED, time_per_call_ms
from vegtts.tasks.runtime import (
    build_reference,
    clone_tree,
    fresh_inputs,
    load_reference_module,
    varied_trial_inputs,
)
from vegtts.tasks.shapes import assign_constants, current_values, infer_roles

log = logging.getLogger(__name__)

TIMING_RANGE_MS = (1.0, 200.0)
TIMING_ROUNDS = 5
CALLS_PER_ROUND = 3  # the evaluator's default calls_per_round: each call gets its own fresh inputs
TRIAL_SEEDS = (1, 2, 3)  # stand-ins for the evaluator's correctness trials
PROGRAM_SEED = 0  # the seed a constant program could have precomputed its answer from
VARIED_SEED = 7  # the evaluator's varied-input trial (where it has one)
PERTURB_SEED = 12345
INIT_SEED = 0
UNSCREENED = ("memory", "timeout", "crash", "screen_error")
DEFAULT_MEMORY_BUDGET_MB = 4096
DEFAULT_TIMEOUT_S = 600.0
SCREEN_BATCH = 2  # batch constants of a GPU-sized problem while it is screened on the CPU
GPU_SUITES = ("builtin_gpu",)


@dataclass(frozen=True)
class ScreenSettings:
    """How a problem is screened (the defaults are the CLI's and the loader's)."""

    threads: int = 1
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB  # address space the screen of one problem may add
    timeout_s: float = DEFAULT_TIMEOUT_S  # wall-clock limit for one problem
    isolate: bool = True  # run each problem in a forked child (False: in this process, no limits)
    calls_per_round: int = CALLS_PER_ROUND
    timing_rounds: int = TIMING_ROUNDS


@dataclass
class ScreenResult:
    """The screen of one problem: findings plus what a table of a whole level needs."""

    task_id: str
    findings: list[str] = field(default_factory=list)
    ref_ms: float = math.nan  # reference time per call (fresh inputs per call, fastest round)
    est_peak_mb: float = math.nan  # the meta-device estimate of the screen's memory
    peak_rss_mb: float = math.nan  # the screening child's measured peak
    seconds: float = 0.0

    @property
    def unscreened(self) -> bool:
        return any(check_of(f) in UNSCREENED for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_of(finding: str) -> str:
    return finding.split(":", 1)[0]


def is_gpu_sized(spec: TaskSpec) -> bool:
    return spec.suite in GPU_SUITES or "gpu" in spec.tags


def small_batch_source(source: str) -> str:
    """`source` with its batch constants (tasks.shapes.infer_roles) above SCREEN_BATCH set to it."""
    values = current_values(source)
    small = {n: SCREEN_BATCH for n, role in infer_roles(source).items() if role == "batch" and values[n] > SCREEN_BATCH}
    return assign_constants(source, small, "screen", "screening on the CPU at a small batch")


class _Stop(Exception):
    """Ends the checks of one problem with a finding."""


def _stage(stage: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except _Stop:
        raise
    except Exception as exc:  # noqa: BLE001 - the problem's code may raise anything
        if is_memory_error(exc):
            raise _Stop(f"memory: {stage} ran out of memory ({type(exc).__name__}: {str(exc)[:200]})") from exc
        raise _Stop(f"{stage}: {type(exc).__name__}: {str(exc)[:300]}") from exc


# ----------------------------------------------------------------------------- helpers


def _flat_tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flat_tensors(item)]
    if isinstance(obj, dict):
        return [t for key in sorted(obj) for t in _flat_tensors(obj[key])]
    return []


def _identical(a: Any, b: Any) -> bool:
    import torch

    ta, tb = _flat_tensors(a), _flat_tensors(b)
    if not ta and not tb:
        return a == b
    return len(ta) == len(tb) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(ta, tb)
    )


def passes(spec: TaskSpec, reference: Any, output: Any, varied: bool = False) -> bool:
    """Would `output` pass the evaluator's correctness check against `reference` for this task?
    (`varied`: the evaluator's varied trial, whose absolute tolerance scales with its output.)"""
    from vegtts.evaluate.compare import compare_outputs  # imports torch: not while Snakemake parses

    return compare_outputs(reference, output, spec.atol, spec.rtol, atol_scaled=varied or spec.atol_scaled).ok


def _like(output: Any, make: Any) -> Any:
    """`output` with every tensor replaced by make(tensor) (nests kept)."""
    import torch

    if isinstance(output, torch.Tensor):
        return make(output)
    if isinstance(output, (list, tuple)):
        return type(output)(_like(x, make) for x in output)
    return output


def _mean_output(outputs: list[Any]) -> Any:
    import torch

    first = outputs[0]
    if isinstance(first, torch.Tensor):
        if not first.is_floating_point():
            return first.clone()
        return torch.stack([o.double() for o in outputs]).mean(0).to(first.dtype)
    if isinstance(first, (list, tuple)):
        return type(first)(_mean_output([o[i] for o in outputs]) for i in range(len(first)))
    return first


def _perturbed(value: Any, generator: Any) -> Any | None:
    """A changed copy of one input, or None if it cannot be meaningfully changed."""
    import torch

    if not isinstance(value, torch.Tensor) or value.numel() == 0:
        return None
    if value.is_floating_point():
        scale = value.double().std().item() if value.numel() > 1 else abs(value.item())
        scale = scale if scale > 0 else 1.0
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float64) * scale
        return (value.double() + noise).to(value.dtype)
    rolled = value.flatten().roll(1).view_as(value)
    return None if torch.equal(rolled, value) else rolled


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3g} ms"


# ----------------------------------------------------------------------------- the checks


def _check(spec: TaskSpec, settings: ScreenSettings, result: ScreenResult) -> list[str]:
    import torch

    findings: list[str] = []
    module = _stage("load", load_reference_module, spec)
    model, _ = _stage("load", build_reference, module, INIT_SEED)
    seeds = [PROGRAM_SEED, *TRIAL_SEEDS]
    outputs: dict[int, Any] = {}
    pristine: dict[int, list[Any]] = {}
    with torch.no_grad():
        for seed in seeds:
            inputs = _stage("inputs", fresh_inputs, module, seed)
            originals = _stage("inputs", clone_tree, inputs)
            out = _stage("forward", model, *inputs)
            if not _identical(inputs, originals):
                findings.append(f"mutates_input: forward changed its inputs in place (seed {seed})")
            outputs[seed], pristine[seed] = out, originals
            del inputs
        first = outputs[PROGRAM_SEED]
        if not _flat_tensors(first):
            return findings + [f"forward: returns {type(first).__name__}, not tensors"]
        if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for o in outputs.values() for t in _flat_tensors(o)):
            findings.append("nonfinite_output: reference output contains NaN or inf")

        trial_seed = TRIAL_SEEDS[0]
        again = _stage("forward", model, *clone_tree(pristine[trial_seed]))
        if not _identical(again, outputs[trial_seed]):
            findings.append("nondeterministic: two forwards on the same model and inputs differ")
        rebuilt, _ = _stage("load", build_reference, module, INIT_SEED)
        rebuilt_inputs = _stage("inputs", fresh_inputs, module, trial_seed)
        if not _identical(rebuilt_inputs, pristine[trial_seed]):
            findings.append("nondeterministic: get_inputs gives different inputs for the same seed")
        elif not _identical(_stage("forward", rebuilt, *rebuilt_inputs), outputs[trial_seed]):
            findings.append("nondeterministic: same seeds, rebuilt model gives a different output")
        del rebuilt, rebuilt_inputs, again

        trials = [outputs[s] for s in TRIAL_SEEDS]
        trial_inputs = [pristine[s] for s in TRIAL_SEEDS]
        varied = _stage("forward", _varied_trial, spec, module, model)
        if varied is not None:  # the evaluator's extra trial: a degenerate program must pass it too
            trial_inputs.append(varied[0])
            trials.append(varied[1])
        findings += _degenerate_output(spec, first, trials, trial_inputs)
        findings += _ignored_inputs(spec, model, pristine[PROGRAM_SEED], first)
    pristine.clear()
    outputs.clear()
    if is_gpu_sized(spec):
        return findings  # the timing range is for a CPU forward
    mutates = any(check_of(f) == "mutates_input" for f in findings)
    ms = _stage("timing", time_per_call_ms, model, module, settings.calls_per_round, settings.timing_rounds, TIMING_SEED, not mutates)
    result.ref_ms = ms
    lo, hi = TIMING_RANGE_MS
    if not lo <= ms <= hi:
        findings.append(
            f"timing: reference takes {_fmt_ms(ms)} per call on fresh inputs, outside [{lo:g}, {hi:g}] ms"
        )
    return findings


def _varied_trial(spec: TaskSpec, module: Any, model: Any) -> tuple[list[Any], Any] | None:
    """(inputs, reference output) of the evaluator's extra correctness trial on varied (signed,
    wider) inputs, where the evaluator makes one (`tasks.runtime.varied_trial_inputs`, a task's
    `varied_inputs`); None otherwise."""
    if not spec.varied_inputs:
        return None
    got = varied_trial_inputs(module, model, VARIED_SEED, fresh_inputs)
    if got is None:
        return None
    inputs = got[0]
    return clone_tree(inputs), model(*clone_tree(inputs))


def _degenerate_output(spec: TaskSpec, program_output: Any, trials: list[Any], trial_inputs: list[list[Any]]) -> list[str]:
    """constant_output, tiny_output and identity_output, by the evaluator's own comparison: a
    degenerate program is flagged only if it passes every trial (the varied one included)."""
    import torch

    findings = []
    seeds = list(TRIAL_SEEDS) + (["varied"] if len(trials) > len(TRIAL_SEEDS) else [])
    varied = [i >= len(TRIAL_SEEDS) for i in range(len(trials))]
    if all(passes(spec, out, program_output, v) for out, v in zip(trials, varied)):
        findings.append(f"constant_output: the output for seed {PROGRAM_SEED} passes as the answer for seeds {seeds}")
    else:
        mean = _mean_output(trials)
        if all(passes(spec, out, mean, v) for out, v in zip(trials, varied)):
            findings.append(f"constant_output: one constant (the mean output) passes for seeds {seeds}")
    zeros = [_like(out, torch.zeros_like) for out in trials]
    if all(passes(spec, out, z, v) for out, z, v in zip(trials, zeros, varied)):
        largest = max(float(t.abs().max()) for o in trials for t in _flat_tensors(o) if t.numel() and t.is_floating_point()) if any(
            t.is_floating_point() for o in trials for t in _flat_tensors(o)) else 0.0
        findings.append(f"tiny_output: an all-zeros output passes (max |out| = {largest:.3g}, atol {spec.atol:g})")
    outs = [_flat_tensors(o) for o in trials]
    if all(len(o) == 1 for o in outs):
        for i in range(len(trial_inputs[0])):
            candidates = [ins[i] if i < len(ins) else None for ins in trial_inputs]
            if all(isinstance(c, torch.Tensor) and passes(spec, o[0], c, v) for o, c, v in zip(outs, candidates, varied)):
                name = spec.forward_args[i] if i < len(spec.forward_args) else f"#{i}"
                findings.append(f"identity_output: the output equals input {name!r} within tolerance: `return {name}` passes")
                break
    return findings


def _ignored_inputs(spec: TaskSpec, model: Any, inputs: list[Any], output: Any) -> list[str]:
    import torch

    findings = []
    generator = torch.Generator().manual_seed(PERTURB_SEED)
    for i, value in enumerate(inputs):
        name = spec.forward_args[i] if i < len(spec.forward_args) else f"#{i}"
        try:
            changed = _perturbed(value, generator)
            if changed is None:
                continue
            args = clone_tree(inputs)
            args[i] = changed
            unchanged = passes(spec, output, model(*args))
        except Exception as exc:  # noqa: BLE001 - a reference that rejects a perturbed input
            if is_memory_error(exc):
                raise _Stop(f"memory: the ignored-input check ran out of memory ({str(exc)[:200]})") from exc
            log.info("task %s: input %r not checked for being ignored: %s: %s", spec.task_id, name, type(exc).__name__, exc)
            continue
        if unchanged:
            findings.append(f"ignored_input: changing input {name!r} alone leaves the output unchanged")
    return findings


# ----------------------------------------------------------------------------- running a screen


def _screen_here(spec: TaskSpec, settings: ScreenSettings) -> ScreenResult:
    """The whole screen of one problem in this process; every exception becomes a finding."""
    import torch

    result = ScreenResult(spec.task_id)
    if is_gpu_sized(spec):
        spec = dataclasses.replace(spec, source=small_batch_source(spec.source))
    t0 = time.monotonic()
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        footprint = meta_footprint(spec.source, INIT_SEED)
        if footprint.ok:
            timing_sets = settings.calls_per_round * (settings.timing_rounds + 1)
            pooled_sets = min(timing_sets, POOL_MAX_BYTES // max(1, footprint.input_bytes))
            need = footprint.peak_bytes(input_sets=pooled_sets + len(TRIAL_SEEDS) + 3, outputs_kept=len(TRIAL_SEEDS) + 3)
            result.est_peak_mb = need / 2**20
            if need > settings.memory_budget_mb * 2**20:
                result.findings = [
                    f"memory: the screen needs about {need / 2**30:.1f} GiB (inputs {footprint.input_bytes / 2**30:.2f} GiB per "
                    f"call, parameters {footprint.param_bytes / 2**30:.2f} GiB, forward {footprint.written_bytes / 2**30:.2f} GiB), "
                    f"over the budget of {settings.memory_budget_mb / 1024:g} GiB: reduce its shapes (tasks.shapes, "
                    "shape_scale, shape_overrides)"
                ]
                return result
        try:
            result.findings = _check(spec, settings, result)
        except _Stop as stop:
            result.findings = [str(stop)]
        except Exception as exc:  # noqa: BLE001 - a bug of the screen must not end a level's screen
            result.findings = [f"screen_error: {type(exc).__name__}: {str(exc)[:300]}"]
    finally:
        torch.set_num_threads(previous)
        result.seconds = time.monotonic() - t0
    return result


def _screen_child(spec: TaskSpec, settings: ScreenSettings) -> ScreenResult:
    return _screen_here(spec, settings)


def screen_task(spec: TaskSpec, settings: ScreenSettings | None = None) -> ScreenResult:
    """Screen one problem (module docstring); never raises for anything the problem does."""
    settings = settings or ScreenSettings()
    if not settings.isolate:
        result = _screen_here(spec, settings)
    else:
        run = run_isolated(_screen_child, (spec, settings), memory_mb=settings.memory_budget_mb, timeout_s=settings.timeout_s)
        if run.status == "ok":
            result = replace(run.result, peak_rss_mb=run.peak_rss_mb, seconds=run.seconds)
        elif run.status == "memory":
            result = ScreenResult(spec.task_id, [f"memory: over the budget of {settings.memory_budget_mb / 1024:g} GiB: {run.error.splitlines()[0]}"])
        elif run.status == "timeout":
            result = ScreenResult(spec.task_id, [f"timeout: the screen {run.error}"])
        elif run.status == "crash":
            result = ScreenResult(spec.task_id, [f"crash: {run.error}"])
        else:
            result = ScreenResult(spec.task_id, [f"screen_error: {run.error.splitlines()[0]}"])
        result.seconds = run.seconds
    for finding in result.findings:
        log.warning("task %s: %s", spec.task_id, finding)
    return result


def validate_task(
    spec: TaskSpec, seeds: Sequence[int] | None = None, threads: int = 1, settings: ScreenSettings | None = None
) -> list[str]:
    """The findings of `screen_task` for one problem, run in this process unless `settings` say
    otherwise; [] means it is fine.  (`seeds` is accepted for compatibility and unused: the
    checks use PROGRAM_SEED and TRIAL_SEEDS.)"""
    settings = settings or ScreenSettings(threads=threads, isolate=False)
    return screen_task(spec, settings).findings


def screen_suite(specs: Iterable[TaskSpec], settings: ScreenSettings | None = None) -> list[ScreenResult]:
    """screen_task for every spec, one at a time, with a progress bar."""
    from tqdm import tqdm

    settings = settings or ScreenSettings()
    results = []
    for spec in tqdm(list(specs), desc="screen tasks", unit="task"):
        results.append(screen_task(spec, settings))
    return results


def validate_suite(specs: Iterable[TaskSpec], settings: ScreenSettings | None = None, **kwargs: Any) -> dict[str, list[str]]:
    """Findings per task id ([] = fine); each problem isolated unless `settings` say otherwise."""
    if settings is None:
        settings = ScreenSettings(**{k: v for k, v in kwargs.items() if k in ScreenSettings.__dataclass_fields__})
    return {r.task_id: r.findings for r in screen_suite(specs, settings)}


def screen_tasks(specs: Iterable[TaskSpec], settings: ScreenSettings | None = None) -> dict[str, list[str]]:
    """Screen a suite before it is used: findings per task id ([] = fine), one warning per problem.

    This is the loader's screening step (resolve_tasks_to_json records it in tasks.json); each
    problem runs isolated with the default budget, so no problem can end the resolve.
    """
    findings = validate_suite(specs, settings)
    flagged = sorted(task_id for task_id, found in findings.items() if found)
    if flagged:
        log.warning("%d of %d task(s) have validation findings (recorded in tasks.json): %s", len(flagged), len(findings), ", ".join(flagged))
    return findings
