"""Coverage of the rule comparisons' 95% intervals when samples repeat programs (issue 12).

    PYTHONPATH=src python benchmarks/bench_coverage.py [--reps 200] [--boot 400]

Simulated experiments (vegtts.analysis.synthetic.RepeatedProgramDesign): each task has a few
distinct programs copied many times, as in real runs; `effect` plants "more surprising programs
are faster" (0: nothing planted).  For each design, the share of experiments whose interval of
surprisal - random (task success difference; geometric-mean speedup ratio over tasks with a
correct sample) contains the population value, for the analysis's intervals (task-clustered
Bayesian bootstrap with range anchors) and, side by side in the same run, the plain percentile
bootstrap over tasks it replaced.  Nominal: 0.95.  Also: the mean half-width of the difference's
interval, and the negative control (units resampled as if seeds of a task were independent).
"""

from __future__ import annotations

import argparse
import time

from vegtts.analysis.synthetic import (
    RepeatedProgramDesign,
    comparison_coverage,
    true_surprisal_vs_random,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="simulated experiments per design")
    parser.add_argument("--boot", type=int, default=400, help="bootstrap draws per interval")
    args = parser.parse_args()
    designs = [RepeatedProgramDesign(n_tasks=n, effect=e, programs_mean=m)
               for n in (12, 30) for e, m in ((0.0, 2.0), (1.5, 2.0), (1.5, 4.0))]
    print(f"{'tasks':>5} {'effect':>6} {'progs':>5} {'true diff':>9} {'method':>10} {'cov diff':>8} "
          f"{'cov ratio':>9} {'half-width':>10}")
    t0 = time.time()
    for d in designs:
        truth = true_surprisal_vs_random(d, n_tasks=20000, seed=1)
        if d.effect == 0:
            truth = {"diff": 0.0, "log_geomean_ratio_solvable": 0.0}  # by symmetry
        for method in ("analysis", "percentile"):
            c = comparison_coverage(d, truth, n_reps=args.reps, n_boot=args.boot, seed=7, method=method)
            print(f"{d.n_tasks:>5} {d.effect:>6} {d.programs_mean:>5} {truth['diff']:>9.3f} {method:>10} "
                  f"{c['coverage_diff']:>8.3f} {c['coverage_geomean_ratio']:>9.3f} {c['mean_halfwidth_diff']:>10.3f}",
                  flush=True)
    d = RepeatedProgramDesign(n_tasks=8, n_seeds=3, effect=1.5)
    truth = true_surprisal_vs_random(d, n_tasks=20000, seed=1)
    for cluster in ("task", "unit"):
        c = comparison_coverage(d, truth, n_reps=args.reps, n_boot=args.boot, seed=7, cluster=cluster)
        print(f"3 seeds sharing programs, 8 tasks, resampling {cluster}s: coverage of the difference "
              f"{c['coverage_diff']:.3f}, of the ratio {c['coverage_geomean_ratio']:.3f}", flush=True)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
