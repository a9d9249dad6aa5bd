"""Fitting a problem's shapes to a reference time on this CPU (`vegtts tasks reduce`).

KernelBench sizes its problems for GPUs (up to 17 GB of inputs, seconds per forward on a CPU).
`reduce_problem` walks the problem's reduction ladder (`tasks.shapes.reduction_ladder`: each step
halves one more group of batch or size dimensions, so the problem keeps its character: square
matrices stay square, broadcasting dims stay equal, kernel sizes, strides and groups stay), ranks
the steps by a meta-device cost estimate (`tasks.probe.meta_footprint`), and measures the
reference, as the evaluator runs it, at the step the estimate puts nearest the target, then at
the step the measurement puts nearest, until one lands within TARGET_BAND of the target.  Every
measurement runs in an isolated child (memory budget, time limit); a step that fails to run
(a dimension below a kernel size, a group count that no longer divides) rules out the steps
below it.  The result is a table entry: the constants to set, the measured time, and why not,
if no step landed within [1, 200] ms.
"""

from __future__ import annotations

import datetime
import logging
import math
import platform
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vegtts.io import sha256_text, write_text
from vegtts.records import TaskSpec
from vegtts.tasks.shapes import assign_constants, reduction_ladder
from vegtts.tasks.validate import CALLS_PER_ROUND, INIT_SEED, TIMING_RANGE_MS, time_per_call_ms

log = logging.getLogger(__name__)

TARGET_MS = 15.0
TARGET_BAND = 2.0  # stop once a measurement is within target / band .. target * band
MAX_MEASUREMENTS = 6
MEASURE_ROUNDS = 5
MEASURE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ReduceSettings:
    target_ms: float = TARGET_MS
    threads: int = 1
    memory_budget_mb: int = 4096
    timeout_s: float = MEASURE_TIMEOUT_S  # per measurement


@dataclass
class Reduction:
    """One problem's table entry, plus what the report shows."""

    task_id: str
    source_sha256: str  # of the problem file as published (before any shape setting)
    constants: dict[str, Any] = field(default_factory=dict)
    ref_ms: float = math.nan
    in_range: bool = False
    step: int = 0
    steps: int = 1
    measurements: list[str] = field(default_factory=list)  # "step i: 12.3 ms" / "step i: error ..."
    note: str = ""
    peak_rss_mb: float = math.nan  # the largest peak of its children

    def table_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "source_sha256": self.source_sha256,
            "constants": {k: list(v) if isinstance(v, tuple) else v for k, v in self.constants.items()},
            "ref_ms": round(self.ref_ms, 3) if math.isfinite(self.ref_ms) else None,
        }
        if self.note:
            entry["note"] = self.note
        return entry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ladder_footprints(source: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(constants, footprint) for every step of the ladder (child side; meta device only)."""
    from vegtts.tasks.probe import meta_footprint

    out = []
    for config in reduction_ladder(source):
        reduced = assign_constants(source, config, "reduce", "tasks reduce")
        out.append((config, meta_footprint(reduced, INIT_SEED).to_dict()))
    return out


def _measure(source: str, threads: int) -> float:
    """The reference's time per call at this source's shapes (child side)."""
    import torch

    from vegtts.evaluate.compare import same_values
    from vegtts.tasks.runtime import build_reference, fresh_inputs, load_module_from_source

    torch.set_num_threads(threads)
    module = load_module_from_source(source, "vegtts_reduce", "<reduce>")
    model, _ = build_reference(module, INIT_SEED)
    inputs = fresh_inputs(module, INIT_SEED)
    pristine = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
    with torch.no_grad():
        model(*inputs)  # a reference that writes into its inputs cannot read them from read-only pages
    return time_per_call_ms(model, module, CALLS_PER_ROUND, MEASURE_ROUNDS, pooled=same_values(inputs, pristine))


def _log_distance(ms: float, target: float) -> float:
    return abs(math.log(max(ms, 1e-9) / target))


def reduce_problem(spec: TaskSpec, settings: ReduceSettings | None = None) -> Reduction:
    """Fit one problem (its published source, `spec.source`) to `settings.target_ms`."""
    from vegtts.tasks.probe import Footprint, run_isolated

    settings = settings or ReduceSettings()
    source = spec.source
    result = Reduction(spec.task_id, sha256_text(source))
    run = run_isolated(_ladder_footprints, (source,), memory_mb=settings.memory_budget_mb, timeout_s=300)
    if run.status != "ok":
        result.note = f"could not walk the reduction ladder: {run.status}: {run.error.splitlines()[0] if run.error else ''}"
        return result
    result.peak_rss_mb = run.peak_rss_mb
    ladder: list[tuple[dict[str, Any], Footprint]] = [(cfg, Footprint(**fp)) for cfg, fp in run.result]
    result.steps = len(ladder)
    budget = settings.memory_budget_mb * 2**20
    estimates = []
    for i, (_, fp) in enumerate(ladder):
        est = fp.est_ms() if fp.ok and fp.est_ms() > 0 else math.nan
        estimates.append(est if math.isfinite(est) else 1000.0 * 2.0**-i)  # no estimate: each step halves
    fits = [not ladder[i][1].ok or ladder[i][1].peak_bytes(CALLS_PER_ROUND + 1, 2) <= budget for i in range(len(ladder))]
    allowed = [i for i in range(len(ladder)) if fits[i]]
    if not allowed:
        result.note = "even the smallest shapes of the reduction ladder exceed the memory budget"
        return result
    scale = 1.0  # measured ms per estimated ms
    measured: dict[int, float] = {}
    lowest_bad = len(ladder)  # steps at or below a step that failed to run are ruled out
    for _ in range(MAX_MEASUREMENTS):
        options = [i for i in allowed if i < lowest_bad and i not in measured]
        if not options:
            break
        i = min(options, key=lambda j: _log_distance(scale * estimates[j], settings.target_ms))
        if measured and _log_distance(scale * estimates[i], settings.target_ms) >= min(
            _log_distance(t, settings.target_ms) for t in measured.values()
        ):
            break  # no unmeasured step is predicted closer than one already measured (e.g. bracketed)
        reduced = assign_constants(source, ladder[i][0], "reduce", "tasks reduce")
        m = run_isolated(_measure, (reduced, settings.threads), memory_mb=settings.memory_budget_mb, timeout_s=settings.timeout_s)
        result.peak_rss_mb = max((p for p in (result.peak_rss_mb, m.peak_rss_mb) if math.isfinite(p)), default=math.nan)
        if m.status == "ok":
            measured[i] = float(m.result)
            result.measurements.append(f"step {i}: {m.result:.3g} ms")
            scale = measured[i] / estimates[i]
            if settings.target_ms / TARGET_BAND <= measured[i] <= settings.target_ms * TARGET_BAND:
                break
        elif m.status == "timeout":
            result.measurements.append(f"step {i}: timeout")
            scale = max(scale, settings.timeout_s * 1e3 / estimates[i])
            allowed = [j for j in allowed if j > i]
        elif m.status == "memory":
            result.measurements.append(f"step {i}: over the memory budget")
            allowed = [j for j in allowed if j > i]
        else:
            first = (m.error or m.status).splitlines()[0][:200]
            result.measurements.append(f"step {i}: {m.status}: {first}")
            lowest_bad = min(lowest_bad, i)
    if not measured:
        result.note = "no step of the reduction ladder ran: " + "; ".join(result.measurements)[:500]
        return result
    lo, hi = TIMING_RANGE_MS
    in_range = [i for i in measured if lo <= measured[i] <= hi]
    pool = in_range or list(measured)
    best = min(pool, key=lambda j: _log_distance(measured[j], settings.target_ms))
    result.step, result.ref_ms, result.in_range = best, measured[best], lo <= measured[best] <= hi
    result.constants = dict(ladder[best][0])
    if not result.in_range:
        if best == 0 and measured[best] < lo:
            result.note = f"{measured[best]:.3g} ms at the problem's own shapes: too fast, and shapes are only ever reduced"
        elif measured[best] > hi:
            result.note = f"{measured[best]:.3g} ms at the smallest step that runs: the reduction ladder cannot go lower"
        else:
            result.note = f"{measured[best]:.3g} ms: no measured step landed within [{lo:g}, {hi:g}] ms"
    return result


def reduce_suite(specs: Iterable[TaskSpec], settings: ReduceSettings | None = None) -> list[Reduction]:
    from tqdm import tqdm

    settings = settings or ReduceSettings()
    out = []
    for spec in tqdm(list(specs), desc="reduce shapes", unit="task"):
        r = reduce_problem(spec, settings)
        log.info("task %s: %s -> %s ms (%s)", spec.task_id, r.constants, f"{r.ref_ms:.3g}", "; ".join(r.measurements))
        out.append(r)
    return out


def write_table(reductions: list[Reduction], path: Path, settings: ReduceSettings, about: dict[str, Any], merge: bool = True) -> None:
    """Write (or update, with `merge`) a shape table file that `tasks.shapes` can name."""
    import yaml

    problems: dict[str, Any] = {}
    if merge and path.is_file():
        problems = dict((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("problems") or {})
    for r in reductions:
        problems[r.task_id] = r.table_entry()
    ordered = dict(sorted(problems.items(), key=lambda kv: _task_sort_key(kv[0])))
    header = (
        "# CPU-sized shapes for KernelBench problems, written by `vegtts tasks reduce` (src/vegtts/tasks/reduce.py).\n"
        "# Each entry pins the problem file by sha256 and gives the module constants to set; ref_ms is the reference's\n"
        "# time per call measured when the table was made (one thread, fresh inputs per call; noisy on a shared machine).\n"
    )
    data = {
        **about,
        "target_ms": settings.target_ms,
        "threads": settings.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "updated": datetime.date.today().isoformat(),
        "problems": ordered,
    }
    write_text(path, header + yaml.safe_dump(data, sort_keys=False, width=120))


def _task_sort_key(task_id: str) -> tuple[Any, ...]:
    head, _, num = task_id.partition("_")
    return (head, int(num)) if num.isdigit() else (head, 0, task_id)
