"""Stored samples of a run re-judged under the previous and the current correctness rule, side by side.

    PYTHONPATH=src python benchmarks/correctness_rules.py --tasks results/store/tasks/<key>/tasks.json \
        --samples results/store/samples/<key>/s0 [--markdown out.md]

previous: the task's atol/rtol with the absolute term x max(1, max|ref|), 3 correctness trials on
          get_inputs' own distribution (the rule before this change; the built-in tasks then
          used 1e-4, the KernelBench suite 1e-2)
current:  the task's tolerance unscaled, the default trials plus the varied trial
Timing is cut to the minimum (3 rounds of 1 call; a rejection by a timing guard is evaluated once
more): only correctness is compared.  "Correct" = passed the correctness trials (`ok`, or stopped
afterwards by the timing phase: a timeout or timing guard on a loaded machine).  Counts are in
samples (each sample carries its program's verdict) and in distinct programs; a task "has both"
when it has correct and incorrect samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd

from vegtts.evaluate import EvalSettings, evaluate_task
from vegtts.records import TaskSpec
from vegtts.tasks import read_tasks_json

TIMING = dict(timing_rounds=3, calls_per_round=1, warmup_calls=0, bootstrap=100)
TIMING_GUARDS = ("untimed_work", "background_work", "cpu_budget")


def rules(spec: TaskSpec) -> dict[str, tuple[TaskSpec, EvalSettings]]:
    return {
        "previous": (dataclasses.replace(spec, atol_scaled=True), EvalSettings(**TIMING, correctness_trials=3, varied_inputs=False)),
        "current": (spec, EvalSettings(**TIMING)),
    }


def judge(spec: TaskSpec, settings: EvalSettings, programs: list[str]) -> dict[str, tuple[str, str]]:
    """program -> (status, error) under one rule."""
    out = {}
    records = evaluate_task(spec, [("", p) for p in programs], settings)
    for program, rec in zip(programs, records):
        if rec.status == "rejected" and rec.guard in TIMING_GUARDS:
            rec = evaluate_task(spec, [("", program)], settings)[0]
        out[program] = (rec.status, f"{rec.guard}: {rec.error}" if rec.guard else rec.error)
    return out


def passed_trials(verdict: tuple[str, str]) -> bool:
    """Passed the correctness trials: `ok`, or stopped later by the timing phase (a timeout or a
    timing guard on a loaded machine), which says nothing about correctness."""
    status, error = verdict
    return status == "ok" or (status != "incorrect" and ("during timing" in error or error.split(":", 1)[0] in TIMING_GUARDS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=Path, required=True, help="tasks.json of the run")
    parser.add_argument("--samples", type=Path, required=True, help="folder of <task>.parquet sample files")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    specs = read_tasks_json(args.tasks)
    rows, flips = [], []
    for path in sorted(args.samples.glob("*.parquet")):
        spec = specs[path.stem]
        samples = pd.read_parquet(path)
        programs = [p for p in dict.fromkeys(samples["program"]) if p]
        verdicts = {name: judge(rule_spec, settings, programs) for name, (rule_spec, settings) in rules(spec).items()}
        for name in ("previous", "current"):
            correct = [bool(p) and passed_trials(verdicts[name][p]) for p in samples["program"]]
            statuses = pd.Series([verdicts[name][p][0] if p else "no_code" for p in samples["program"]]).value_counts()
            rows.append({"task": spec.task_id, "rule": name, "samples": len(correct), "correct": sum(correct),
                         "ok": int(statuses.get("ok", 0)), "statuses": ", ".join(f"{k} {v}" for k, v in statuses.items()),
                         "distinct_programs": len(programs), "distinct_correct": sum(passed_trials(verdicts[name][p]) for p in programs)})
        for p in programs:
            before, after = verdicts["previous"][p], verdicts["current"][p]
            if passed_trials(before) != passed_trials(after):
                n = int((samples["program"] == p).sum())
                flips.append((spec.task_id, n, before[0], after[0], after[1] or before[1], p[len(spec.source.rstrip()):].strip()))
        print(f"{spec.task_id}: " + ", ".join(f"{r['rule']} {r['correct']}/{r['samples']}" for r in rows[-2:]), flush=True)

    table = pd.DataFrame(rows)
    lines = [f"Command: PYTHONPATH=src python benchmarks/correctness_rules.py {' '.join(sys.argv[1:])}", "",
             "| rule | samples correct | share | samples `ok` | tasks with correct and incorrect samples | distinct programs correct |", "|---|---|---|---|---|---|"]
    for name in ("previous", "current"):
        t = table[table["rule"] == name]
        both = int(((t["correct"] > 0) & (t["correct"] < t["samples"])).sum())
        lines.append(f"| {name} | {t['correct'].sum()} of {t['samples'].sum()} | {t['correct'].sum() / max(1, t['samples'].sum()):.1%} | {t['ok'].sum()} "
                     f"| {both} of {len(t)} | {t['distinct_correct'].sum()} of {t['distinct_programs'].sum()} |")
    lines += ["", "| task | previous: passed trials (statuses) | current: passed trials (statuses) |", "|---|---|---|"]
    for task in dict.fromkeys(table["task"]):
        t = table[table["task"] == task].set_index("rule")
        cells = [f"{t.loc[r, 'correct']} of {t.loc[r, 'samples']} ({t.loc[r, 'statuses']})" for r in ("previous", "current")]
        lines.append(f"| {task} | {cells[0]} | {cells[1]} |")
    lines += ["", f"Programs whose verdict flipped ({len(flips)}):"]
    for task, n, before, after, error, code in flips:
        body = " ".join(code.split())[:300]
        lines.append(f"- {task} ({n} samples): {before} -> {after}: {error[:200]}\n  `{body}`")
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
