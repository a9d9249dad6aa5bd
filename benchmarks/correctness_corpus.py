"""The correctness corpus (tests/correctness/) under the previous and the current correctness rule.

    PYTHONPATH=src python benchmarks/correctness_corpus.py --kernelbench /path/to/KernelBench [--markdown out.md]
    PYTHONPATH=src python benchmarks/correctness_corpus.py --local

--kernelbench: every corpus program with a `# kernelbench: N` line, on KernelBench level-1 problem N
of a local checkout, shapes reduced by SHAPE_OVERRIDES (not in CI: CI has no checkout).
--local: every corpus program on its own problem (tests/correctness/problems, builtin tasks), as
tests/test_compare.py runs them.

Each program is evaluated twice, in one run:
  previous  the rule before this change: the absolute term x max(1, max|ref|), atol = rtol = 1e-2 for
            the KernelBench suite, 1e-4 or the task's own (built-in: 1e-3 for ten tasks) otherwise;
            3 correctness trials on get_inputs' own distribution
  current   the task's tolerance (KernelBench's current fp32 1e-4, unscaled), the default
            correctness trials plus the varied trial (signed, wider inputs)
A wrong program is caught when its verdict is `incorrect`; an honest one kept when it is `ok`.
Timing is cut to the minimum (3 rounds of 1 call): only the correctness verdict is of interest; a
rejection by a timing guard (noise on a shared machine) is evaluated once more, as in the test.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import time
from pathlib import Path

from vegtts.evaluate import EvalSettings, evaluate_task
from vegtts.io import hardware_fingerprint, sha256_text
from vegtts.records import TaskSpec
from vegtts.tasks import load_tasks, solution_program

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "correctness"
TIMING_GUARDS = ("untimed_work", "background_work", "cpu_budget")  # rejections from timing noise, not outputs
TIMING = dict(timing_rounds=3, calls_per_round=1, warmup_calls=0, bootstrap=100, timeout_s=120)
# KernelBench level-1 shapes take GBs; these keep each problem's structure at a CPU-friendly size.
SHAPE_OVERRIDES: dict[int, dict[str, int]] = {
    13: {"N": 512},  # problem 1 sets N = 2048 * 2, not an int constant shape_overrides can change
    19: {"batch_size": 16, "dim": 4096},
    20: {"batch_size": 16, "dim": 4096},
    23: {"batch_size": 16, "dim": 4096},
    26: {"batch_size": 16, "dim": 4096},
    28: {"batch_size": 16, "dim": 4096},
    32: {"batch_size": 16, "dim": 4096},
    36: {"batch_size": 4, "dim1": 32, "dim2": 32},
    40: {"batch_size": 4, "dim1": 32, "dim2": 32},
    47: {"batch_size": 4, "dim2": 255},
    63: {"batch_size": 2, "in_channels": 16, "out_channels": 32, "width": 64, "height": 64},
    89: {"batch_size": 8},  # rows stay 32768 long (input_shape is a tuple, not an int constant)
    95: {"batch_size": 1024},  # 4096 classes (input_shape is computed from num_classes before overrides apply)
}


def header(path: Path, key: str) -> str | None:
    match = re.search(rf"^# {key}: (\S+)", path.read_text(), re.M)
    return match.group(1) if match else None


def corpus() -> list[tuple[Path, str]]:
    return [(p, "incorrect" if kind == "wrong" else "ok") for kind in ("wrong", "honest") for p in sorted((CORPUS / kind).glob("*.py"))]


# (atol, rtol) of the built-in tasks that set their own before this change (their ATOL/RTOL constants)
PREVIOUS_BUILTIN_TOL = {
    "attention_causal": (1e-3, 1e-3), "bmm_broadcast": (1e-3, 1e-3), "conv2d_unfold": (1e-3, 1e-3),
    "cumsum_matmul": (1e-3, 1e-3), "layernorm_manual": (1e-3, 1e-3), "linear": (1e-3, 1e-3),
    "logsumexp_stable": (1e-3, 1e-4), "matmul": (1e-3, 1e-3), "pairwise_dist": (1e-3, 1e-3), "row_norm": (1e-3, 1e-4),
}


def previous_rule(spec: TaskSpec) -> tuple[TaskSpec, EvalSettings]:
    """Before: |d| <= atol x max(1, max|ref|) + rtol |ref|, KernelBench suite 1e-2, others 1e-4 or the task's own."""
    atol, rtol = (1e-2, 1e-2) if spec.suite == "kernelbench" else PREVIOUS_BUILTIN_TOL.get(spec.task_id, (spec.atol, spec.rtol))
    return (dataclasses.replace(spec, atol=atol, rtol=rtol, atol_scaled=True),
            EvalSettings(**TIMING, correctness_trials=3, varied_inputs=False))


def current_rule(spec: TaskSpec) -> tuple[TaskSpec, EvalSettings]:
    return spec, EvalSettings(**TIMING)


def resolve(path: Path, kernelbench: Path | None) -> TaskSpec | None:
    if kernelbench is not None:
        number = header(path, "kernelbench")
        if number is None or not number.isdigit():  # "none (why)": the program does not fit KernelBench's shapes
            return None
        cfg = {"suite": "kernelbench", "path": str(kernelbench), "level": 1, "ids": [int(number)],
               "shape_overrides": {int(number): SHAPE_OVERRIDES.get(int(number), {})}}
        return load_tasks(cfg)[0]
    problem = header(path, "problem")
    if problem.startswith("builtin:"):
        return load_tasks({"suite": "builtin", "ids": [problem.split(":", 1)[1]]})[0]
    return load_tasks({"suite": "dir", "path": str(CORPUS / "problems"), "ids": [problem]})[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--kernelbench", type=Path, help="KernelBench checkout (level 1 problems)")
    where.add_argument("--local", action="store_true", help="the corpus's own problems (as the test)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rows, started = [], time.time()
    for path, expected in corpus():
        spec = resolve(path, args.kernelbench)
        if spec is None:
            continue
        verdicts = []
        for rule in (previous_rule, current_rule):
            rule_spec, settings = rule(spec)
            program = solution_program(rule_spec, path.read_text())
            rec = evaluate_task(rule_spec, [(sha256_text(program), program)], settings)[0]
            if rec.status == "rejected" and rec.guard in TIMING_GUARDS:  # timing noise: once more, as the test does
                rec = evaluate_task(rule_spec, [(sha256_text(program), program)], settings)[0]
            verdicts.append(rec)
        rows.append((path, expected, spec.task_id, *verdicts))
        prev, cur = verdicts
        print(f"{path.parent.name:6s} {path.stem:34s} {spec.task_id:12s} expected {expected:9s} previous {verdict(prev):9s} "
              f"current {verdict(cur):9s} max abs err {cur.max_abs_err:.3g}", flush=True)

    lines = summarise(rows, time.time() - started, args)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


def verdict(rec) -> str:
    return f"{rec.status} ({rec.guard})" if rec.guard else rec.status


def summarise(rows: list, seconds: float, args: argparse.Namespace) -> list[str]:
    def hits(kind: str, which: int) -> tuple[int, int]:
        sel = [r for r in rows if r[0].parent.name == kind]
        return sum(r[3 + which].status == r[1] for r in sel), len(sel)

    lines = [
        f"Command: PYTHONPATH=src python benchmarks/correctness_corpus.py {' '.join(sys.argv[1:])}",
        f"Machine: {hardware_fingerprint()}",
        f"Run time: {seconds:.0f} s for {len(rows)} programs x 2 rules",
        "",
        "| rule | wrong programs `incorrect` | honest programs `ok` |",
        "|---|---|---|",
    ]
    for which, name in ((0, "previous: atol x max(1, max abs ref) (KernelBench 1e-2), 3 trials"), (1, "current: 1e-4 unscaled, default trials + varied trial")):
        (w, nw), (h, nh) = hits("wrong", which), hits("honest", which)
        lines.append(f"| {name} | {w} of {nw} | {h} of {nh} |")
    lines += ["", "| program | task | expected | previous | current | current max abs err |", "|---|---|---|---|---|---|"]
    for path, expected, task_id, prev, cur in rows:
        mark = "" if cur.status == expected else " **miss**"
        lines.append(f"| {path.parent.name}/{path.stem} | {task_id} | {expected} | {verdict(prev)} | {verdict(cur)}{mark} | {cur.max_abs_err:.3g} |")
    misses = [f"{p.parent.name}/{p.stem}: {c.status} ({c.error[:160]})" for p, e, _, _, c in rows if c.status != e]
    if misses:
        lines += ["", "Misses under the current rule:"] + [f"- {m}" for m in misses]
    return lines


if __name__ == "__main__":
    sys.exit(main())
