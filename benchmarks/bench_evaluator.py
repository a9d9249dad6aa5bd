"""Evaluator benchmark: per-candidate overhead (fork server vs fresh interpreter), throughput,
and an A/A run (the reference against itself) for the false-positive rate of fast_1 / fast_1_sig.

    PYTHONPATH=src python benchmarks/bench_evaluator.py [--aa 60] [--throughput 64] [--overhead 8]

Since issue #15 a measured candidate uses three children (correctness, then a fresh timing pair),
and a task's first timed candidate also pays for the task's A/A control (a full measurement of the
reference): the overhead below includes both; "isolating" is the median per child.

Definitions
  timed work of a candidate: the forward calls the evaluation exists for, at their measured
      per-call medians: (warmup_calls + timing_rounds * calls_per_round) * (ref + cand) for the
      timing, plus correctness_trials * cand for the correctness trials.  (The reference outputs
      of the correctness trials are computed once per task, not per candidate.)
  overhead of a candidate: its evaluation wall time minus its timed work: process start or fork,
      setup (exec, weights), transfers, comparisons, requests, cleanup.  Measured with
      max_parallel=1 on a task whose reference context already exists (it is built once per task),
      so candidates do not overlap; reported as the median over candidates and as
      (wall time of the batch / candidates) - mean timed work.
Every ratio is measured in this one run; the machine may be shared, so read medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import time
from typing import Iterator

import numpy as np
import torch

from vegtts.evaluate import EvalSettings, evaluate_task
from vegtts.evaluate.protocol import Encoded
from vegtts.evaluate.server import SpawnLauncher, shared_fork_server
from vegtts.evaluate.session import ChildSession
from vegtts.io import hardware_fingerprint, sha256_text
from vegtts.records import TaskSpec

SOURCE = '''
import torch
import torch.nn as nn

BATCH = {batch}
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        m = x.max(dim=-1, keepdim=True).values
        e = torch.exp(x - m)
        s = e.sum(dim=-1, keepdim=True)
        return e / s


def get_inputs():
    return [torch.randn(BATCH, DIM) * 3]


def get_init_inputs():
    return []
'''
HONEST = "class ModelNew(Model):\n    pass  # variant {i}\n"
FAST = "class ModelNew(Model):\n    def forward(self, x):\n        return torch.softmax(x, dim=-1)  # variant {i}\n"
WRONG = "class ModelNew(Model):\n    def forward(self, x):\n        return torch.softmax(x, dim=0)  # variant {i}\n"
FAILING = "class ModelNew(Model):\n    def forward(self, x):\n        raise RuntimeError('variant {i}')\n"


def calibrated_spec(target_ms: float) -> TaskSpec:
    """Pick BATCH so one reference forward takes about target_ms on one thread."""
    torch.set_num_threads(1)
    batch = 64
    ns: dict = {}
    exec(SOURCE.format(batch=batch), ns)  # noqa: S102 - our own reference
    model, x = ns["Model"](), torch.randn(batch, 2048)
    for _ in range(3):
        model(x)
    t0 = time.perf_counter()
    for _ in range(10):
        model(x)
    per_row_ms = (time.perf_counter() - t0) / 10 * 1000 / batch
    batch = max(8, int(round(target_ms / per_row_ms)))
    src = SOURCE.format(batch=batch)
    return TaskSpec("bench_softmax", f"softmax {batch}x2048", "bench", src, sha256_text(src), ["x"])


def programs(spec: TaskSpec, template: str, n: int, offset: int = 0) -> list[tuple[str, str]]:
    out = []
    for i in range(offset, offset + n):
        prog = spec.source + "\n\n" + template.format(i=i)
        out.append((sha256_text(prog), prog))
    return out


def timed_work_s(rec, s: EvalSettings) -> float:
    """The forward calls of one correct candidate's evaluation (see the module docstring)."""
    if not rec.correct:
        return 0.0
    timing_calls = s.warmup_calls + s.timing_rounds * s.calls_per_round
    return (timing_calls * (rec.ref_time_ms + rec.cand_time_ms) + s.correctness_trials * rec.cand_time_ms) / 1000


@contextlib.contextmanager
def session_parts() -> Iterator[dict[int, dict[str, float]]]:
    """Per child session (pid): seconds to start it (fork or fresh interpreter), to set it up
    (exec the program, build the model, load the weights) and to close it (kill, clean up)."""
    parts: dict[int, dict[str, float]] = {}
    real_init, real_request, real_close = ChildSession.__init__, ChildSession.request, ChildSession.close

    def init(self, *a, **k):
        t0 = time.perf_counter()
        real_init(self, *a, **k)
        parts.setdefault(self.pid, {})["start"] = time.perf_counter() - t0

    def request(self, msg, *a, **k):
        t0 = time.perf_counter()
        try:
            return real_request(self, msg, *a, **k)
        finally:
            if isinstance(msg, Encoded) and b'"op": "setup"' in msg.skeleton[:64]:
                parts.setdefault(self.pid, {})["setup"] = time.perf_counter() - t0

    def close(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return real_close(self, *a, **k)
        finally:
            parts.setdefault(self.pid, {}).setdefault("close", time.perf_counter() - t0)

    ChildSession.__init__, ChildSession.request, ChildSession.close = init, request, close  # type: ignore[method-assign]
    try:
        yield parts
    finally:
        ChildSession.__init__, ChildSession.request, ChildSession.close = real_init, real_request, real_close  # type: ignore[method-assign]


def overhead(spec: TaskSpec, s: EvalSettings, n: int) -> dict[str, float]:
    s = EvalSettings.from_dict({**s.to_dict(), "max_parallel": 1})
    out: dict[str, float] = {}
    for name, launcher in (("fork_server", shared_fork_server()), ("fresh_interpreter", SpawnLauncher())):
        evaluate_task(spec, programs(spec, HONEST, 1, offset=10_000 + len(out)), s, launcher=launcher)  # warm
        with session_parts() as parts:
            t0 = time.monotonic()
            recs = evaluate_task(spec, programs(spec, HONEST, n, offset=1000 * (len(out) + 1)), s, launcher=launcher)
            wall = time.monotonic() - t0
        timed = [timed_work_s(r, s) for r in recs]
        out[name] = statistics.median(r.eval_seconds - t for r, t in zip(recs, timed))
        out[name + "_wall"] = wall / n - statistics.mean(timed)
        out[name + "_eval_s"] = statistics.median(r.eval_seconds for r in recs)
        out[name + "_timed_s"] = statistics.median(timed)
        sessions = [p for p in parts.values() if {"start", "setup", "close"} <= set(p)]  # candidate children
        for part in ("start", "setup", "close"):
            out[f"{name}_{part}"] = statistics.median(p[part] for p in sessions)
        out[name + "_isolation"] = statistics.median(p["start"] + p["setup"] + p["close"] for p in sessions)
        if isinstance(launcher, SpawnLauncher):
            launcher.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-ms", type=float, default=5.0, help="reference forward time to calibrate for")
    ap.add_argument("--aa", type=int, default=60, help="A/A candidates (the reference against itself; 0 = none; "
                    "benchmarks/bench_aa.py measures A/A over many problems)")
    ap.add_argument("--throughput", type=int, default=64, help="candidates in the throughput task")
    ap.add_argument("--overhead", type=int, default=8, help="candidates per launcher in the overhead comparison")
    ap.add_argument("--settings", default="{}", help="JSON of EvalSettings overrides (default: the defaults)")
    ap.add_argument("--aa-only", action="store_true", help="run only the A/A part")
    ap.add_argument("--overhead-only", action="store_true", help="run only the overhead part")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    s = EvalSettings.from_dict(json.loads(args.settings))
    spec = calibrated_spec(args.target_ms)
    print(f"machine: {hardware_fingerprint()}; load average {os.getloadavg()}")
    print(f"settings: {s.to_dict()}")
    print(f"task: {spec.name} (calibrated for a {args.target_ms} ms reference)")

    if args.aa_only:
        return aa_run(spec, s, args.aa)
    oh = overhead(spec, s, args.overhead)
    print(f"\n== per-candidate overhead (evaluation wall time minus timed work), {args.overhead} honest candidates each ==")
    print("   timed work = (warmup_calls + timing_rounds x calls_per_round) x (ref + cand per-call median)"
          " + correctness_trials x cand;\n   overhead = the rest (fork/start, setup, transfers, input loads, output"
          " checks, comparisons, cleanup); max_parallel=1, task context already built")
    for name, label in (("fork_server", "fork server"), ("fresh_interpreter", "fresh interpreter")):
        print(f"{label + ':':19s} median {oh[name] * 1000:8.1f} ms; from batch wall {oh[name + '_wall'] * 1000:8.1f} ms   "
              f"(evaluation {oh[name + '_eval_s']:.3f} s, timed work {oh[name + '_timed_s']:.3f} s)")
    print(f"ratio fresh/fork:   {oh['fresh_interpreter'] / oh['fork_server']:.1f}x (median), "
          f"{oh['fresh_interpreter_wall'] / oh['fork_server_wall']:.1f}x (batch wall)")
    print("   of which isolating the candidate (start the child, set it up: exec, build, weights; close it), median per candidate:")
    for name, label in (("fork_server", "fork server"), ("fresh_interpreter", "fresh interpreter")):
        print(f"{label + ':':19s} {oh[name + '_isolation'] * 1000:8.1f} ms  (start {oh[name + '_start'] * 1000:.1f}, "
              f"setup {oh[name + '_setup'] * 1000:.1f}, close {oh[name + '_close'] * 1000:.1f} ms)")
    print(f"ratio fresh/fork:   {oh['fresh_interpreter_isolation'] / oh['fork_server_isolation']:.1f}x (isolation); the rest of the "
          f"overhead (inputs to and outputs from the child, comparisons, requests) is the same work for both: "
          f"{(oh['fork_server'] - oh['fork_server_isolation']) * 1000:.1f} ms with the fork server")
    if args.overhead_only:
        return

    n = args.throughput
    mix = (programs(spec, HONEST, n // 4, 20_000) + programs(spec, FAST, n // 4, 20_000)
           + programs(spec, WRONG, n // 4, 20_000) + programs(spec, FAILING, n - 3 * (n // 4), 20_000))
    t0 = time.monotonic()
    recs = evaluate_task(spec, mix, s)
    wall = time.monotonic() - t0
    statuses = {st: sum(r.status == st for r in recs) for st in sorted({r.status for r in recs})}
    ok = [r for r in recs if r.correct]
    print(f"\n== throughput: {n} candidates (1/4 honest, 1/4 faster, 1/4 wrong, 1/4 raising) ==")
    print(f"wall {wall:.1f} s -> {n / wall:.2f} candidates/s; statuses {statuses}")
    print(f"per correct candidate: median eval {statistics.median(r.eval_seconds for r in ok):.3f} s; "
          f"reference median {statistics.median(r.ref_time_ms for r in ok):.2f} ms/call")
    fast = [r for r in recs if r.correct and "torch.softmax" in mix[recs.index(r)][1]]
    if fast:
        print(f"faster rewrite: median speedup {statistics.median(r.speedup for r in fast):.2f}, "
              f"share with interval above 1: {np.mean([r.speedup_lo > 1 for r in fast]):.2f}")

    if args.aa > 0:
        aa_run(spec, s, args.aa)


def aa_run(spec: TaskSpec, s: EvalSettings, n: int) -> None:
    aa = evaluate_task(spec, programs(spec, HONEST, n, 30_000), s)
    sp = np.array([r.speedup for r in aa if r.correct])
    log_sp = np.log(sp)
    print(f"\n== A/A: {n} candidates that are the reference ==")
    print(f"correct {len(sp)}/{n}; log-speedup mean {log_sp.mean():+.4f}, sd {log_sp.std(ddof=1):.4f}, "
          f"min {sp.min():.3f}, max {sp.max():.3f}")
    print(f"false fast_1 rate (speedup > 1):        {np.mean(sp > 1):.3f}")
    print(f"false fast_1_sig rate (lower bound > 1): {np.mean([r.speedup_lo > 1 for r in aa if r.correct]):.3f}")
    print(f"interval covers 1: {np.mean([r.speedup_lo <= 1 <= r.speedup_hi for r in aa if r.correct]):.3f}; "
          f"median interval width {statistics.median(r.speedup_hi - r.speedup_lo for r in aa if r.correct):.3f}")
    print(f"median evaluation time per A/A candidate: {statistics.median(r.eval_seconds for r in aa):.3f} s")
    flagged = [r.status for r in aa if r.status != "ok"]
    if flagged:
        print(f"A/A candidates not ok (false rejections): {len(flagged)}: {sorted(set(flagged))}")
    if not math.isfinite(float(log_sp.std())):
        raise SystemExit("A/A produced no finite speedups")


if __name__ == "__main__":
    main()
