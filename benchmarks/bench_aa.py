"""A/A benchmark: the reference timed against itself, new evaluator side by side with an old one.

Every evaluation is a distinct candidate that is the reference (`class ModelNew(Model): pass`
plus a unique comment, so nothing is deduplicated or cached), evaluated with the default
settings through `evaluate_task`, in a fresh worker process per (evaluator, problem): the new
evaluator (this checkout's src/) and an old one (a git worktree of main at --old-rev, created on
first use), alternating which goes first from problem to problem.  Conditions: `quiet` (whatever
else runs on the machine) and `loaded` (this benchmark starts a competing process pinned to the
cpus the evaluator does not time on: a memory-copy loop, or a busy loop with --load spin).

    PYTHONPATH=src python benchmarks/bench_aa.py                  # full: 10 problems x 10 evaluations x 2 x 2
    PYTHONPATH=src python benchmarks/bench_aa.py --quick          # 3 problems x 4 evaluations
    PYTHONPATH=src python benchmarks/bench_aa.py --honest --conditions loaded --old-rev ''
        # every hand-written solution in tests/solutions/ once per evaluator and condition: all must be
        # `ok` with no guard (issue #15 item 3: no honest program rejected on a loaded machine)

Printed per condition and evaluator, over all evaluations (unit: evaluations, i.e. A/A candidates):
  mean / sd of log(speedup)   target |mean| <= 0.03
  above 1                     share whose 95% interval lies above 1 (false fast_1_sig), target <= 2.5%
  below 1                     share whose interval lies below 1
  coverage                    share whose interval contains 1 (nominal 95%)
  fast_1                      share with speedup > 1 (about half for a truly equal pair)
  not ok                      evaluations that were not `ok` (false rejections), with their guards
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = [  # builtin tasks: elementwise, reductions, matmul-like; fast enough for a 15-minute run
    "relu_where", "gelu_erf", "softmax_stable", "layernorm_manual", "matmul", "sigmoid_exp",
    "leaky_relu_where", "hardswish_clamp", "log_softmax_log", "linear", "tanh_exp", "silu_mul",
]
LOAD_SOURCE = {
    "memory": "import numpy as np\na = np.ones(8 << 20)\nb = np.empty_like(a)\nwhile True:\n    np.copyto(b, a)\n",
    "spin": "while True:\n    pass\n",
}


def worker(args: argparse.Namespace) -> None:
    """Evaluate `--n` reference copies of one problem with whatever vegtts PYTHONPATH imports."""
    logging.basicConfig(level=logging.WARNING)
    from vegtts.evaluate import EvalSettings, evaluate_task
    from vegtts.io import sha256_text
    from vegtts.tasks import load_tasks

    spec = load_tasks({"suite": "builtin", "ids": [args.problem], "shape_scale": args.shape_scale})[0]
    settings = EvalSettings.from_dict(json.loads(args.settings))
    progs = [spec.source.rstrip("\n") + f"\n\n\nclass ModelNew(Model):\n    pass  # A/A {args.tag} {i}\n" for i in range(args.n)]
    t0 = time.monotonic()
    recs = evaluate_task(spec, [(sha256_text(p), p) for p in progs], settings, None)
    wall = time.monotonic() - t0
    for r in recs:
        print(json.dumps({"problem": args.problem, "status": r.status, "guard": r.guard, "speedup": r.speedup,
                          "lo": r.speedup_lo, "hi": r.speedup_hi, "ref_ms": r.ref_time_ms, "flags": r.flags,
                          "rounds": r.n_timing_rounds, "eval_s": r.eval_seconds, "batch_wall_s": wall / len(recs)}), flush=True)


def honest_worker(args: argparse.Namespace) -> None:
    """Evaluate every tests/solutions/<task>.py once (distinct programs, no cache)."""
    logging.basicConfig(level=logging.WARNING)
    from vegtts.evaluate import EvalSettings, evaluate_task
    from vegtts.io import sha256_text
    from vegtts.tasks import load_tasks, solution_program

    settings = EvalSettings.from_dict(json.loads(args.settings))
    for path in sorted((REPO / "tests" / "solutions").glob("*.py")):
        spec = load_tasks({"suite": "builtin", "ids": [path.stem]})[0]
        prog = solution_program(spec, path.read_text()) + f"\n# {args.tag}\n"
        r = evaluate_task(spec, [(sha256_text(prog), prog)], settings, None)[0]
        print(json.dumps({"problem": path.stem, "status": r.status, "guard": r.guard, "speedup": r.speedup,
                          "lo": r.speedup_lo, "hi": r.speedup_hi, "ref_ms": r.ref_time_ms, "flags": r.flags,
                          "rounds": r.n_timing_rounds, "eval_s": r.eval_seconds, "batch_wall_s": r.eval_seconds,
                          "error": r.error[:300]}), flush=True)


def old_src(rev: str, path: Path) -> Path:
    """src/ of a detached git worktree of this repository at `rev` (created on first use)."""
    if not (path / "src" / "vegtts").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev], check=True,
                       stdout=subprocess.DEVNULL)
    return path / "src"


def timing_cpus() -> tuple[list[int], list[int]]:
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1:], cpus[:-1] or cpus


def run_worker(src: Path, problem: str, n: int, tag: str, args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--problem", problem, "--n", str(n), "--tag", tag,
           "--settings", args.settings, "--shape-scale", str(args.shape_scale)] + (["--honest"] if args.honest else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or (len(rows) != n and not args.honest):
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"worker for {problem} ({src}) failed with code {out.returncode}")
    return rows


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok" and r["speedup"] > 0]
    logs = [math.log(r["speedup"]) for r in ok]
    not_ok = [f"{r['status']}:{r['guard'] or '-'}" for r in rows if r["status"] != "ok"]
    return {
        "n": len(rows), "ok": len(ok),
        "mean": statistics.mean(logs) if logs else math.nan,
        "sd": statistics.stdev(logs) if len(logs) > 1 else math.nan,
        "above": sum(r["lo"] > 1 for r in ok) / max(1, len(ok)),
        "below": sum(r["hi"] < 1 for r in ok) / max(1, len(ok)),
        "coverage": sum(r["lo"] <= 1 <= r["hi"] for r in ok) / max(1, len(ok)),
        "fast_1": sum(r["speedup"] > 1 for r in ok) / max(1, len(ok)),
        "width": statistics.median(math.log(r["hi"] / r["lo"]) for r in ok) if ok else math.nan,
        "eval_s": statistics.median(r["eval_s"] for r in rows),
        "batch_s": statistics.mean(r["batch_wall_s"] for r in rows),
        "not_ok": sorted(set(not_ok)), "n_not_ok": len(not_ok),
        "flags": sorted({f for r in rows for f in r["flags"].split(",") if f and f != "reference_copy"}),
    }


def print_table(results: dict[tuple[str, str], list[dict]]) -> None:
    print("\n== A/A (reference against itself); unit: evaluations ==")
    print(f"{'condition':9s} {'evaluator':9s} {'n':>4s} {'mean log':>9s} {'sd':>7s} {'above 1':>8s} {'below 1':>8s} "
          f"{'coverage':>9s} {'fast_1':>7s} {'width':>7s} {'eval s':>7s}  not ok / flags")
    for (condition, side), rows in results.items():
        s = summary(rows)
        print(f"{condition:9s} {side:9s} {s['n']:4d} {s['mean']:+9.4f} {s['sd']:7.4f} {s['above']:8.3f} {s['below']:8.3f} "
              f"{s['coverage']:9.3f} {s['fast_1']:7.3f} {s['width']:7.3f} {s['eval_s']:7.2f}  "
              f"{s['n_not_ok']} {s['not_ok'] or ''} {s['flags'] or ''}")
    print("targets (issue #15, item 2): |mean log| <= 0.03 and 'above 1' <= 0.025, quiet and loaded")


def print_honest(results: dict[tuple[str, str], list[dict]]) -> None:
    print("\n== honest solutions (tests/solutions/); unit: programs ==")
    for (condition, side), rows in results.items():
        for r in rows:
            print(f"{condition:7s} {side:4s} {r['problem']:20s} {r['status']:9s} {r['guard'] or '-':22s} {r['speedup']:7.2f} "
                  f"[{r['lo']:.2f}, {r['hi']:.2f}] n={r['rounds']} {r['flags'] or ''} {r['error'][:120] if r['status'] != 'ok' else ''}")
        bad = [r for r in rows if r["status"] != "ok" or r["guard"]]
        print(f"{condition} {side}: {len(rows)} programs, {len(rows) - len(bad)} ok with no guard, not ok: "
              f"{[(r['problem'], r['status'], r['guard']) for r in bad]}; interval above 1: {sum(r['lo'] > 1 for r in rows)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=10, help="builtin problems (from the list in this file)")
    ap.add_argument("--per-problem", type=int, default=10, help="A/A evaluations per problem, evaluator and condition")
    ap.add_argument("--conditions", default="quiet,loaded", help="comma-separated: quiet, loaded")
    ap.add_argument("--load", choices=sorted(LOAD_SOURCE), default="memory", help="the competing process of `loaded`")
    ap.add_argument("--old-rev", default="a9d7bd4", help="git revision of the old evaluator ('' = new only)")
    ap.add_argument("--old-path", default="/tmp/vegtts-aa-old", help="where its worktree goes")
    ap.add_argument("--settings", default="{}", help="JSON of EvalSettings overrides for both (default: the defaults)")
    ap.add_argument("--shape-scale", type=float, default=1.0, help="tasks.shape_scale of the problems")
    ap.add_argument("--quick", action="store_true", help="3 problems x 4 evaluations")
    ap.add_argument("--json", default="", help="also write every evaluation's row here")
    ap.add_argument("--honest", action="store_true", help="evaluate every tests/solutions/ program once instead of A/A")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--problem", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return honest_worker(args) if args.honest else worker(args)
    if args.quick:
        args.problems, args.per_problem = 3, 4
    problems = PROBLEMS[: args.problems]
    sides = {"new": REPO / "src"}
    if args.old_rev:
        sides["old"] = old_src(args.old_rev, Path(args.old_path))
    t_cpus, other = timing_cpus()
    print(f"load average at start {os.getloadavg()}; cpus {sorted(os.sched_getaffinity(0))}, timing cpu {t_cpus}, "
          f"competing process on {other} ({args.load}) in `loaded`")
    print(f"problems: {problems}; {args.per_problem} evaluations each per evaluator and condition; settings {args.settings}; "
          f"shape_scale {args.shape_scale}; old = git {args.old_rev or '-'}")
    results: dict[tuple[str, str], list[dict]] = {}
    t0 = time.monotonic()
    for condition in args.conditions.split(","):
        load = None
        if condition == "loaded":
            load = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {other})\n" + LOAD_SOURCE[args.load]])
            time.sleep(1)
        try:
            for i, problem in enumerate(["tests/solutions"] if args.honest else problems):
                order = list(sides) if i % 2 == 0 else list(reversed(sides))
                for side in order:
                    rows = run_worker(sides[side], problem, args.per_problem, f"{condition}-{side}", args)
                    results.setdefault((condition, side), []).extend(dict(r, condition=condition, side=side) for r in rows)
                    s = summary(rows)
                    print(f"  {condition:7s} {side:4s} {problem:18s} mean {s['mean']:+.3f} sd {s['sd']:.3f} above {s['above']:.2f} "
                          f"below {s['below']:.2f} ref {statistics.median(r['ref_ms'] for r in rows):.2f} ms  "
                          f"load {os.getloadavg()[0]:.2f}  t {time.monotonic() - t0:.0f} s", flush=True)
        finally:
            if load is not None:
                load.kill()
                load.wait()
    if args.honest:
        print_honest(results)
    else:
        print_table(results)
    print(f"load average at end {os.getloadavg()}; wall {time.monotonic() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([r for rows in results.values() for r in rows]))


if __name__ == "__main__":
    main()
