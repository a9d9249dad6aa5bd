"""Reference vs hand-written solution time for every builtin problem, on one CPU thread.

For each task the reference Model and the solution ModelNew (tests/solutions/<task_id>.py,
appended to the reference source, reference weights loaded) run on the same inputs in
interleaved rounds (ref, sol, sol, ref, ...: the order alternates so drift and cache warmth
cancel); the table shows the median per-call time of each, the ratio of the medians, and the
25-75% range of the per-round paired ratios (how much the machine's noise moves the ratio).

    PYTHONPATH=src python benchmarks/bench_solutions.py [--rounds 21] [--ids a,b]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from vegtts.io import hardware_fingerprint
from vegtts.tasks import load_module_from_source, load_reference_module, load_tasks, make_inputs, make_model, solution_program

SOLUTIONS_DIR = Path(__file__).resolve().parents[1] / "tests" / "solutions"


def build_pair(spec):
    ref_module = load_reference_module(spec)
    sol_source = (SOLUTIONS_DIR / f"{spec.task_id}.py").read_text()
    sol_module = load_module_from_source(solution_program(spec, sol_source), "vegtts_solution", f"<solution {spec.task_id}>")
    ref = make_model(ref_module, 0)
    sol = make_model(sol_module, 0, class_name="ModelNew")
    sol.load_state_dict(ref.state_dict())
    return ref, sol, make_inputs(ref_module, 0)


def interleaved_ms(ref, sol, inputs, rounds: int) -> tuple[list[float], list[float]]:
    ref_ms, sol_ms = [], []
    with torch.no_grad():
        ref(*inputs), sol(*inputs)  # warm-up
        for i in range(rounds):
            order = ((ref, ref_ms), (sol, sol_ms)) if i % 2 == 0 else ((sol, sol_ms), (ref, ref_ms))
            for model, sink in order:
                start = time.perf_counter()
                model(*inputs)
                sink.append((time.perf_counter() - start) * 1e3)
    return ref_ms, sol_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--ids", default="all", help="comma-separated task ids, or 'all'")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ids = "all" if args.ids == "all" else args.ids.split(",")
    specs = load_tasks({"suite": "builtin", "ids": ids})
    hw = hardware_fingerprint()
    print(f"# {hw['cpu']} ({hw['logical_cpus']} logical CPUs), torch {torch.__version__}, 1 thread, "
          f"{args.rounds} interleaved rounds, median ms per forward")
    print(f"{'task_id':<20} {'tags':<34} {'ref_ms':>8} {'sol_ms':>8} {'speedup':>8} {'paired_iqr':>14}")
    for spec in specs:
        ref, sol, inputs = build_pair(spec)
        ref_ms, sol_ms = interleaved_ms(ref, sol, inputs, args.rounds)
        r, s = statistics.median(ref_ms), statistics.median(sol_ms)
        q1, _, q3 = statistics.quantiles([a / b for a, b in zip(ref_ms, sol_ms)], n=4)
        print(f"{spec.task_id:<20} {','.join(spec.tags):<34} {r:8.2f} {s:8.2f} {r / s:7.2f}x "
              f"{f'[{q1:.2f}, {q3:.2f}]':>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
