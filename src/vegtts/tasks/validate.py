"""Checks that a problem can tell a correct candidate from a degenerate one.

A problem is useless (or gameable) if its reference output does not depend on its inputs, is so
small that returning zeros passes the tolerance, ignores one of its inputs, or is not
reproducible from the seeds.  `validate_task` runs the reference (never candidate code) and
returns findings, each a string "<check>: <detail>"; an empty list means the problem is fine.

Checks (in order):
  load / forward     the module must exec, build and run (otherwise only this is reported)
  nonfinite_output   NaN or inf in the reference output
  nondeterministic   two forwards on the same model and inputs differ (e.g. train-mode
                     dropout), or rebuilding model and inputs from the same seeds differs
                     (get_inputs not drawing from torch's seeded global RNG)
  mutates_input      the reference forward changes its inputs in place
  constant_output    outputs for all input seeds agree within the task's tolerance
  tiny_output        max |out| over all seeds <= TINY_OUTPUT_FACTOR * atol: an all-zeros
                     answer would be (nearly) within tolerance
  ignored_input      perturbing one tensor input alone leaves the output within tolerance
                     (floats get Gaussian noise of the input's own scale, other dtypes a roll)
  timing             fastest of TIMING_REPEATS reference forwards outside TIMING_RANGE_MS
                     (too fast to time reliably, or too slow for the evaluation budget); the
                     minimum, not the median, so that a loaded machine does not trigger it

GPU-sized problems (suite builtin_gpu, or tagged "gpu") are screened on the CPU with
their batch-like constants set to SCREEN_BATCH (the checks above do not depend on the batch size;
at full size the six builtin_gpu problems took 95 s of CPU), and without the timing check, whose
range is for a CPU forward.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterable, Sequence

from vegtts.records import TaskSpec
from vegtts.tasks.catalog import SHAPE_SCALE_NAMES, _int_constants
from vegtts.tasks.runtime import load_reference_module, make_inputs, make_model

log = logging.getLogger(__name__)

TINY_OUTPUT_FACTOR = 10.0
TIMING_RANGE_MS = (1.0, 200.0)
TIMING_REPEATS = 7
SCREEN_BATCH = 2  # batch-like constants of a GPU-sized problem while it is screened on the CPU
GPU_SUITES = ("builtin_gpu",)
PERTURB_SEED = 12345
INIT_SEED = 0


def _flat_tensors(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flat_tensors(item)]
    if isinstance(obj, dict):
        return [t for key in sorted(obj) for t in _flat_tensors(obj[key])]
    return []


def _as_float_tensors(obj: Any) -> list[Any]:
    import torch

    tensors = _flat_tensors(obj)
    if not tensors and isinstance(obj, (int, float)):
        tensors = [torch.tensor(float(obj))]
    return [t.detach().double() if t.is_floating_point() else t.detach() for t in tensors]


def _identical(a: Any, b: Any) -> bool:
    import torch

    ta, tb = _flat_tensors(a), _flat_tensors(b)
    if not ta and not tb:
        return a == b
    return len(ta) == len(tb) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(ta, tb)
    )


def _close(a: Any, b: Any, atol: float, rtol: float) -> bool:
    import torch

    ta, tb = _as_float_tensors(a), _as_float_tensors(b)
    if len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return False
        if x.is_floating_point():
            if not torch.allclose(x, y, atol=atol, rtol=rtol, equal_nan=True):
                return False
        elif not torch.equal(x, y):
            return False
    return True


def _max_abs(out: Any) -> float:
    vals = [t.abs().max().item() for t in _as_float_tensors(out) if t.numel() and t.is_floating_point()]
    return max(vals) if vals else float("inf")


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


def _fastest_ms(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def is_gpu_sized(spec: TaskSpec) -> bool:
    return spec.suite in GPU_SUITES or "gpu" in spec.tags


def small_batch_source(source: str) -> str:
    """`source` with its batch-like int constants (catalog.SHAPE_SCALE_NAMES) set to SCREEN_BATCH."""
    import ast

    constants = _int_constants(ast.parse(source))
    names = [n for n in SHAPE_SCALE_NAMES if constants.get(n, 0) > SCREEN_BATCH]
    if not names:
        return source
    return source.rstrip("\n") + "\n\n# ---- screening on the CPU at a small batch ----\n" + "".join(f"{n} = {SCREEN_BATCH}\n" for n in names)


def _check(spec: TaskSpec, seeds: Sequence[int]) -> list[str]:
    if is_gpu_sized(spec):
        spec = dataclasses.replace(spec, source=small_batch_source(spec.source))
    import torch

    findings: list[str] = []
    try:
        module = load_reference_module(spec)
        model = make_model(module, INIT_SEED)
    except Exception as exc:  # a broken problem file is a finding, not a crash
        return [f"load: {type(exc).__name__}: {exc}"]

    outputs = []
    inputs_by_seed = []
    with torch.no_grad():
        for seed in seeds:
            inputs = make_inputs(module, seed)
            originals = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
            try:
                out = model(*inputs)
            except Exception as exc:
                return findings + [f"forward: {type(exc).__name__}: {exc}"]
            if not _identical(inputs, originals):
                findings.append(f"mutates_input: forward changed its inputs in place (seed {seed})")
            outputs.append(out)
            inputs_by_seed.append(originals)

        if not _flat_tensors(outputs[0]):
            findings.append(f"forward: returns {type(outputs[0]).__name__}, not tensors")
            return findings
        if any(not torch.isfinite(t).all() for o in outputs for t in _as_float_tensors(o) if t.is_floating_point()):
            findings.append("nonfinite_output: reference output contains NaN or inf")

        seed0_inputs = inputs_by_seed[0]
        if not _identical(model(*[x.clone() if isinstance(x, torch.Tensor) else x for x in seed0_inputs]), outputs[0]):
            findings.append("nondeterministic: two forwards on the same model and inputs differ")
        rebuilt_model = make_model(module, INIT_SEED)
        rebuilt_inputs = make_inputs(module, seeds[0])
        if not _identical(rebuilt_inputs, seed0_inputs):
            findings.append("nondeterministic: get_inputs gives different inputs for the same seed")
        elif not _identical(rebuilt_model(*rebuilt_inputs), outputs[0]):
            findings.append("nondeterministic: same seeds, rebuilt model gives a different output")

        if len(outputs) > 1 and all(_close(o, outputs[0], spec.atol, spec.rtol) for o in outputs[1:]):
            findings.append(f"constant_output: outputs for seeds {list(seeds)} agree within tolerance")

        largest = max(_max_abs(o) for o in outputs)
        if largest <= TINY_OUTPUT_FACTOR * spec.atol:
            findings.append(
                f"tiny_output: max |out| = {largest:.3g} <= {TINY_OUTPUT_FACTOR:g} * atol ({spec.atol:g}); "
                "returning zeros would (nearly) pass"
            )

        generator = torch.Generator().manual_seed(PERTURB_SEED)
        for i, value in enumerate(seed0_inputs):
            changed = _perturbed(value, generator)
            if changed is None:
                continue
            args = [x.clone() if isinstance(x, torch.Tensor) else x for x in seed0_inputs]
            args[i] = changed
            if _close(model(*args), outputs[0], spec.atol, spec.rtol):
                name = spec.forward_args[i] if i < len(spec.forward_args) else f"#{i}"
                findings.append(f"ignored_input: changing input {name!r} alone leaves the output unchanged")

        if is_gpu_sized(spec):
            return findings
        ms = _fastest_ms(lambda: model(*seed0_inputs), TIMING_REPEATS)
    lo, hi = TIMING_RANGE_MS
    if not lo <= ms <= hi:
        findings.append(f"timing: reference forward takes {ms:.2f} ms, outside [{lo:g}, {hi:g}] ms")
    return findings


def validate_task(spec: TaskSpec, seeds: Sequence[int] = (0, 1, 2), threads: int = 1) -> list[str]:
    """Run the checks in this module's docstring on one problem; [] means it is fine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        findings = _check(spec, list(seeds))
    finally:
        torch.set_num_threads(previous)
    for finding in findings:
        log.warning("task %s: %s", spec.task_id, finding)
    return findings


def validate_suite(specs: Iterable[TaskSpec], **kwargs: Any) -> dict[str, list[str]]:
    """validate_task for every spec, keyed by task id (kwargs are passed through)."""
    from tqdm import tqdm

    specs = list(specs)
    return {spec.task_id: validate_task(spec, **kwargs) for spec in tqdm(specs, desc="validate tasks", unit="task")}


def screen_tasks(specs: Iterable[TaskSpec], **kwargs: Any) -> dict[str, list[str]]:
    """Screen a suite before it is used: findings per task id ([] = fine), one warning per problem.

    This is the loader's screening step (resolve_tasks_to_json records it in tasks.json);
    validate_task logs each finding, and a summary names the degenerate problems.
    """
    findings = validate_suite(specs, **kwargs)
    flagged = sorted(task_id for task_id, found in findings.items() if found)
    if flagged:
        log.warning("%d of %d task(s) have validation findings (recorded in tasks.json): %s", len(flagged), len(findings), ", ".join(flagged))
    return findings
