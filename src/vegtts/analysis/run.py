"""The analysis stage: merged per-sample data and the CSV tables the figures and report read."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vegtts.analysis.constants import CEILING_TOLERANCE, SURPRISAL_VARIANTS
from vegtts.analysis.definitions import definitions_for
from vegtts.analysis.estimators import expected_best_speedup_at_k, fast_p_at_k, k_grid
from vegtts.analysis.merge import merge_samples_and_evaluations
from vegtts.analysis.programs import distinct_programs
from vegtts.analysis.selection import (
    UNIT_KEYS,
    aggregate_selection,
    bootstrap_weights,
    interval_including,
    select_all,
    weighted_ratio_draws,
)
from vegtts.analysis.statistics import (
    DEFAULT_SPREAD_THRESHOLD,
    logprob_spread,
    paired_comparisons,
    surprisal_correlations,
    surprisal_quartiles,
)
from vegtts.analysis.surprisal import NLL_COLUMNS, TAIL_COLUMNS
from vegtts.analysis.tables import write_table
from vegtts.config import schema_default
from vegtts.io import read_json, write_parquet
from vegtts.outputs import ANALYSIS_TABLES, MERGED_SAMPLES
from vegtts.records import STATUSES

log = logging.getLogger(__name__)

# The `analysis` block's keys: defaults from the config schema; the others are not config keys.
DEFAULT_SETTINGS: dict[str, Any] = {
    "k_values": schema_default("analysis.k_values"),
    "fast_p": schema_default("analysis.fast_p"),
    "primary_variant": schema_default("analysis.primary_variant"),
    "primary_policy": None,  # None: "base" if present, else the first policy in sort order
    "bootstrap": schema_default("analysis.bootstrap"),
    "seed": schema_default("seed"),
    "spread_threshold": DEFAULT_SPREAD_THRESHOLD,  # nats per token, see definition logprob_spread
    "signal_targets": {"share_correct": 0.25, "tasks_mixed_correctness": 8, "tasks_with_speed_signal": 4},
    "exclude_flagged": schema_default("analysis.exclude_flagged"),
}

# What one row, count or test of each table is over (written as `# unit:` into its header).
TABLE_UNITS = {
    "sample_stats": "per (policy, task): samples (n_samples, shares), distinct programs (n_*programs), evaluations by status",
    "selection": "units (policy, seed, task): rates and geometric means over units; intervals resample tasks",
    "selection_per_task": "one row per unit (policy, seed, task) and rule",
    "scaling": "samples drawn k at a time within a unit (Best-of-N draws samples, copies included); means over units; intervals resample tasks",
    "signal": "per check: share_correct over samples; the others count tasks",
    "comparisons": "paired over units; intervals resample tasks; tests over tasks (per-task means over seeds)",
    "correlations": "distinct correct programs (copies of one program averaged); intervals resample tasks",
    "surprisal_quartiles": "distinct correct programs (n_programs), with their samples (n_samples) for reference",
    "logprob_spread": "per unit (policy, seed, task): correct samples and distinct correct programs",
    "scaling_summary": "Best-of-N curves over samples, means over units",
    "equivalent_k": "per rule: task success or mean speedup over units; k counts samples drawn",
    "correct_programs": "distinct correct programs (policy, task, code_sha256), n_copies = samples",
    "rejections": "distinct rejected programs (policy, task, code_sha256), n_samples = their samples",
    "outcomes": "per outcome: samples (n_samples, share with a task-clustered interval), distinct programs (n_programs), tasks (n_tasks)",
}
# The tables the original workflow tracks; the others are new and listed for the lead to add.
SATURATION_POINTS, SATURATION_RATIO = 0.02, 0.98


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {**DEFAULT_SETTINGS, **(settings or {})}
    out["signal_targets"] = {**DEFAULT_SETTINGS["signal_targets"], **(out.get("signal_targets") or {})}
    if out["primary_variant"] not in SURPRISAL_VARIANTS:
        raise ValueError(f"primary_variant must be one of {SURPRISAL_VARIANTS}, got {out['primary_variant']!r}")
    ex = out["exclude_flagged"]
    if not (isinstance(ex, bool) or (isinstance(ex, (list, tuple)) and all(isinstance(c, str) and c for c in ex))):
        raise ValueError(f"config key 'analysis.exclude_flagged': {ex!r} is not allowed (must be true, false or a list "
                         "of validation check names such as [constant_output, tiny_output])")
    return out


def task_validation(tasks_paths: Sequence[str | os.PathLike] | str | os.PathLike | None) -> dict[str, list[str]]:
    """Validation findings per task id from tasks.json files ("<check>: <detail>" strings; [] = fine)."""
    if not tasks_paths:
        return {}
    if isinstance(tasks_paths, (str, os.PathLike)):
        tasks_paths = [tasks_paths]
    found: dict[str, list[str]] = {}
    for path in tasks_paths:
        for t in read_json(path).get("tasks", []):
            found[str(t["task_id"])] = [str(f) for f in (t.get("validation") or [])]
    return found


def finding_check(finding: str) -> str:
    """The check name of a finding "<check>: <detail>"."""
    return finding.split(":", 1)[0].strip()


def flagged_tasks(validation: Mapping[str, Sequence[str]], exclude: bool | Sequence[str]) -> list[str]:
    """Tasks that analysis.exclude_flagged leaves out: any finding (True) or one of the named checks."""
    if exclude is False or not validation:
        return []
    if exclude is True:
        return sorted(t for t, f in validation.items() if f)
    wanted = set(exclude)
    return sorted(t for t, f in validation.items() if any(finding_check(x) in wanted for x in f))


def primary_policy(samples: pd.DataFrame, requested: str | None) -> str:
    policies = sorted(samples["policy"].unique())
    if requested:
        if requested not in policies:
            raise ValueError(f"primary_policy {requested!r} not in the data ({policies})")
        return requested
    return "base" if "base" in policies else policies[0]


def _guard_counts(g: pd.DataFrame) -> str:
    """"guard x n" for the rejected samples of g (n = samples), most frequent first."""
    rej = g[g["status"] == "rejected"]
    if rej.empty:
        return ""
    guards = rej["guard"].fillna("").replace("", "unnamed") if "guard" in rej else pd.Series("unnamed", index=rej.index)
    return "; ".join(f"{k} x {v}" for k, v in guards.value_counts().items())


def sample_stats(samples: pd.DataFrame, validation: Mapping[str, Sequence[str]] | None = None,
                 excluded: Sequence[str] = ()) -> pd.DataFrame:
    """Per (policy, task): sample counts, shares with code / correct / fast_1 / fast_1_sig, distinct
    programs, verbatim reference copies, statuses, rejected guards, validation findings and whether
    analysis.exclude_flagged left the task out."""
    rows = []
    validation = validation or {}
    for (policy, task), g in samples.groupby(["policy", "task_id"], sort=True):
        correct = g["correct"].astype(bool)
        code = g["code_sha256"].fillna("").astype(str) if "code_sha256" in g else pd.Series("", index=g.index)
        ref_copy = g["reference_copy"].astype(bool) if "reference_copy" in g else pd.Series(False, index=g.index)
        row = {
            "policy": policy, "task_id": task, "n_seeds": g["seed"].nunique(), "n_samples": len(g),
            "n_programs": int(code[code.ne("")].nunique()),
            "n_correct_programs": int(code[correct & code.ne("")].nunique()),
            "n_fast_1_programs": int(code[g["fast_1"].astype(bool) & code.ne("")].nunique()),
            "n_reference_copy": int(ref_copy.sum()),
            "n_fast_1_reference_copy": int((ref_copy & g["fast_1"].astype(bool)).sum()),
            "share_with_code": float(g["has_code"].mean()),
            "share_correct": float(correct.mean()),
            "share_fast_1": float(g["fast_1"].mean()),
            "share_fast_1_sig": float(g["fast_1_sig"].mean()),
            "max_speedup": float(g["speedup"].max()),
            "median_speedup_correct": float(g.loc[correct, "speedup"].median()) if correct.any() else math.nan,
            "mean_nll_mean_code_correct": float(g.loc[correct, "nll_mean_code"].mean()) if correct.any() else math.nan,
            "mean_n_code_tokens": float(g["n_code_tokens"].mean()),
        }
        counts = g["status"].value_counts()
        for status in STATUSES:
            row[f"n_{status}"] = int(counts.get(status, 0))
        other = int(len(g) - sum(counts.get(s, 0) for s in STATUSES))
        if other:
            row["n_other_status"] = other
        row["rejected_guards"] = _guard_counts(g)
        row["validation"] = "; ".join(validation.get(str(task), []))
        row["excluded"] = str(task) in set(excluded)
        rows.append(row)
    return pd.DataFrame(rows)


OUTCOMES = {
    "correct": "correct",
    "fast_1": "fast_1 (correct, speedup > 1)",
    "fast_1_sig": "fast_1_sig (correct, interval of the speedup above 1)",
    "reference_copy": "verbatim copy of the reference",
    "fast_1_reference_copy": "fast_1 and a verbatim copy of the reference",
    "rejected": "rejected by a guard",
}


def outcomes_table(samples: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per policy and outcome: samples (count, share with a task-clustered 95% interval), distinct
    programs and tasks with that outcome; the headline counts of the report."""
    rng = np.random.default_rng(seed)
    rows = []
    for policy, pol in samples.groupby("policy", sort=True):
        ref = pol["reference_copy"].astype(bool) if "reference_copy" in pol else pd.Series(False, index=pol.index)
        flags = {
            "correct": pol["correct"].astype(bool), "fast_1": pol["fast_1"].astype(bool),
            "fast_1_sig": pol["fast_1_sig"].astype(bool), "reference_copy": ref,
            "fast_1_reference_copy": ref & pol["fast_1"].astype(bool), "rejected": pol["status"].eq("rejected"),
        }
        tasks = sorted(pol["task_id"].astype(str).unique())
        task_of = pol["task_id"].astype(str)
        code = pol["code_sha256"].fillna("").astype(str) if "code_sha256" in pol else pd.Series("", index=pol.index)
        program = task_of + "|" + code
        n_per_task = task_of.value_counts().reindex(tasks).to_numpy(float)
        for name, flag in flags.items():
            per_task = flag.groupby(task_of).sum().reindex(tasks).to_numpy(float)
            lo = hi = math.nan
            if n_boot > 0:
                draws = weighted_ratio_draws(bootstrap_weights(len(tasks), n_boot, rng), per_task, n_per_task, (0.0, 1.0))
                lo, hi = interval_including(draws, float(flag.mean()))
            rows.append({"policy": policy, "outcome": name, "description": OUTCOMES[name],
                         "n_samples": int(flag.sum()), "share_of_samples": float(flag.mean()),
                         "share_lo": lo, "share_hi": hi,
                         "n_programs": int(program[flag & code.ne("")].nunique()),
                         "n_tasks": int(task_of[flag].nunique()),
                         "n_samples_total": len(pol), "n_programs_total": int(program[code.ne("")].nunique()),
                         "n_tasks_total": len(tasks)})
    return pd.DataFrame(rows)


def rejections_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Every rejected program with the guard that fired, its error text and the samples it covers."""
    rej = samples[samples["status"] == "rejected"]
    cols = ["policy", "task_id", "code_sha256", "guard", "error", "n_samples", "samples"]
    if rej.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (policy, task, sha), g in rej.groupby(["policy", "task_id", "code_sha256"], sort=True):
        first = g.iloc[0]
        rows.append({"policy": policy, "task_id": task, "code_sha256": str(sha)[:12],
                     "guard": str(first.get("guard", "") or "unnamed"), "error": str(first.get("error", ""))[:300],
                     "n_samples": len(g),
                     "samples": " ".join(f"s{int(r.seed)}:{int(r.sample_idx)}" for r in g.itertuples())})
    return pd.DataFrame(rows, columns=cols)


def scaling_table(
    samples: pd.DataFrame, k_values: str | Sequence[int], fast_p: Sequence[float], n_boot: int, seed: int
) -> pd.DataFrame:
    """fast_p@k and expected best speedup@k averaged over units, with task-clustered bootstrap CIs.

    K (the largest k) is the smallest number of samples in any unit of the policy, so every
    unit contributes at every k.
    """
    rows = []
    rng = np.random.default_rng(seed)
    for policy, pol in samples.groupby("policy", sort=True):
        units = list(pol.groupby(UNIT_KEYS, sort=True))
        n_min = min(len(u) for _, u in units)
        ks = k_grid(n_min, k_values)
        metrics: list[tuple[str, float]] = [("fast_p@k", float(p)) for p in fast_p] + [("expected_best_speedup@k", math.nan)]
        values = np.zeros((len(units), len(metrics) * len(ks)))
        for ui, (_, u) in enumerate(units):
            correct = u["correct"].to_numpy(dtype=bool)
            speedup = u["speedup"].to_numpy(dtype=float)
            n = len(u)
            col = 0
            for metric, p in metrics:
                c = int(correct.sum()) if p == 0 else int((correct & (speedup > p)).sum())
                for k in ks:
                    values[ui, col] = fast_p_at_k(n, c, k) if metric == "fast_p@k" else expected_best_speedup_at_k(speedup, k)
                    col += 1
        task_of_unit = pd.Series([key[2] for key, _ in units])
        by_task = pd.DataFrame(values).groupby(task_of_unit.to_numpy()).sum().to_numpy()
        units_per_task = task_of_unit.value_counts(sort=False).reindex(sorted(task_of_unit.unique())).to_numpy(dtype=float)
        weights = bootstrap_weights(len(units_per_task), n_boot, rng) if n_boot > 0 else None
        rates = [i for i, (metric, _) in enumerate(m for m in metrics for _ in ks) if metric == "fast_p@k"]
        speeds = [i for i in range(by_task.shape[1]) if i not in set(rates)]
        boot = np.full((n_boot, by_task.shape[1]), np.nan) if weights is not None else None
        if weights is not None:  # rates in [0, 1] are anchored there; expected best speedups are not
            boot[:, rates] = weighted_ratio_draws(weights, by_task[:, rates], units_per_task, (0.0, 1.0))
            boot[:, speeds] = weighted_ratio_draws(weights, by_task[:, speeds], units_per_task, None)
        col = 0
        for metric, p in metrics:
            for k in ks:
                lo, hi = interval_including(boot[:, col], float(values[:, col].mean())) if boot is not None \
                    else (math.nan, math.nan)
                rows.append({"policy": policy, "metric": metric, "p": p, "k": k, "value": float(values[:, col].mean()),
                             "ci_lo": float(lo), "ci_hi": float(hi), "K": n_min,
                             "n_units": len(units), "n_tasks": len(units_per_task)})
                col += 1
    return pd.DataFrame(rows)


def unit_curves(samples: pd.DataFrame, fast_p: Sequence[float]) -> dict[str, dict[tuple[str, float | None], np.ndarray]]:
    """Per policy: (metric, p) -> the mean over units of the Best-of-N curve at every k = 1..K."""
    out: dict[str, dict[tuple[str, float | None], np.ndarray]] = {}
    for policy, pol in samples.groupby("policy", sort=True):
        units = [u for _, u in pol.groupby(UNIT_KEYS, sort=True)]
        big_k = min(len(u) for u in units)
        curves: dict[tuple[str, float | None], np.ndarray] = {}
        for p in fast_p:
            acc = np.zeros(big_k)
            for u in units:
                correct = u["correct"].to_numpy(bool)
                c = int(correct.sum()) if p == 0 else int((correct & (u["speedup"].to_numpy(float) > p)).sum())
                acc += [fast_p_at_k(len(u), c, k) for k in range(1, big_k + 1)]
            curves[("fast_p@k", float(p))] = acc / len(units)
        acc = np.zeros(big_k)
        for u in units:
            sp = u["speedup"].to_numpy(float)
            acc += [expected_best_speedup_at_k(sp, k) for k in range(1, big_k + 1)]
        curves[("expected_best_speedup@k", None)] = acc / len(units)
        out[policy] = curves
    return out


def saturation_table(curves: Mapping[str, Mapping[tuple[str, float | None], np.ndarray]]) -> pd.DataFrame:
    """Smallest k whose Best-of-N value is within 2 points (rates) or 2% (speedup) of the value at K."""
    rows = []
    for policy, by_metric in curves.items():
        for (metric, p), curve in by_metric.items():
            final = float(curve[-1])
            target = final - SATURATION_POINTS if metric == "fast_p@k" else final * SATURATION_RATIO
            k_sat = int(np.argmax(curve >= target - 1e-12)) + 1
            rows.append({"policy": policy, "metric": metric, "p": math.nan if p is None else p, "K": len(curve), "value_at_1": float(curve[0]),
                         "value_at_K": final, "saturation_k": k_sat, "value_at_saturation": float(curve[k_sat - 1]),
                         "gain_last_doubling": final - float(curve[max(len(curve) // 2 - 1, 0)])})
    return pd.DataFrame(rows)


def ceiling_k(curve: np.ndarray, tolerance: float) -> int:
    """Smallest integer k (curve[k-1]) within `tolerance` of the curve's value at its largest k."""
    return int(np.argmax(curve >= curve[-1] - tolerance - 1e-12)) + 1


def equivalent_k_table(selection: pd.DataFrame, curves: Mapping[str, Mapping[tuple[str, float | None], np.ndarray]]) -> pd.DataFrame:
    """Per rule: the smallest Best-of-N k whose oracle value reaches the rule's value at K.

    A rule at the curve's ceiling (within CEILING_TOLERANCE of its value at K, task success in
    points, mean speedup relative) is matched only as a bound: where the estimated curve first
    touches its ceiling depends on the pool, not on the rule (k_matched_text "at least k")."""
    rows = []
    for _, r in selection.iterrows():
        by_metric = curves.get(r["policy"])
        if by_metric is None:
            continue
        pairs = (("task_success", r["success_rate"], by_metric.get(("fast_p@k", 1.0))),
                 ("mean_speedup", r["mean_speedup"], by_metric.get(("expected_best_speedup@k", None))))
        for measure, value, curve in pairs:
            if curve is None:
                continue
            reached = np.flatnonzero(curve >= value - 1e-9)
            tol = CEILING_TOLERANCE if measure == "task_success" else CEILING_TOLERANCE * float(curve[-1])
            at_ceiling = bool(value >= curve[-1] - tol - 1e-12)
            k_bound = ceiling_k(curve, tol)
            if at_ceiling:
                text = f"at least {k_bound}"
            elif reached.size:
                text = str(int(reached[0]) + 1)
            else:
                text = f"> {len(curve)}"
            rows.append({"policy": r["policy"], "rule": r["rule"], "variant": r["variant"], "kind": r["kind"],
                         "measure": measure, "rule_value": float(value), "K": len(curve),
                         "k_matched": (k_bound if at_ceiling else int(reached[0]) + 1) if reached.size or at_ceiling
                         else math.nan,
                         "at_ceiling": at_ceiling, "k_matched_text": text,
                         "oracle_value_at_k_matched": float(curve[reached[0]]) if reached.size else math.nan})
    return pd.DataFrame(rows)


def correct_programs_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct correct program: what figures need (length, NLL, speedup), copies averaged."""
    values = ["n_code_tokens", "n_tokens", *NLL_COLUMNS, *[c for c in TAIL_COLUMNS if c in samples]]
    progs = distinct_programs(samples[samples["correct"].astype(bool)], values)
    cols = ["policy", "task_id", "code_sha256", "n_copies", "n_seeds", "speedup", "speedup_lo", "fast_1",
            "fast_1_sig", "reference_copy", *values]
    progs = progs[[c for c in cols if c in progs]].copy()
    progs["code_sha256"] = progs["code_sha256"].astype(str).str[:12]
    return progs.reset_index(drop=True)


def signal_table(samples: pd.DataFrame, policy: str, targets: Mapping[str, float]) -> pd.DataFrame:
    """Does the experiment have enough signal for selection to matter?  (tasks pool their seeds)"""
    pol = samples[samples["policy"] == policy]
    per_task = pol.groupby("task_id").agg(
        n=("correct", "size"), n_correct=("correct", "sum"),
        n_sig=("fast_1_sig", "sum"),
    )
    mixed = int(((per_task["n_correct"] > 0) & (per_task["n_correct"] < per_task["n"])).sum())
    speed = int(((per_task["n_sig"] > 0) & (per_task["n_sig"] < per_task["n_correct"])).sum())
    checks = [
        ("share_correct", "share of all samples that are correct", float(pol["correct"].mean()), "samples"),
        ("tasks_mixed_correctness", "tasks with both correct and incorrect samples", mixed, "tasks"),
        ("tasks_with_speed_signal",
         "tasks where some correct samples are measurably faster (speedup_lo > 1) and other correct samples are not",
         speed, "tasks"),
    ]
    code = pol["code_sha256"].fillna("").astype(str) if "code_sha256" in pol else pd.Series("", index=pol.index)
    n_programs = int((pol.loc[code.ne(""), "task_id"].astype(str) + "|" + code[code.ne("")]).nunique())
    return pd.DataFrame([
        {"check": name, "description": desc, "unit": unit, "policy": policy, "value": value, "target": targets[name],
         "comparison": ">=", "pass": bool(value >= targets[name]), "n_tasks": len(per_task), "n_samples": len(pol),
         "n_programs": n_programs}
        for name, desc, value, unit in checks
    ])


def run_analysis(
    sample_paths: Sequence[str | os.PathLike],
    eval_paths: Sequence[str | os.PathLike],
    settings: Mapping[str, Any] | None,
    provenance: Mapping[str, Any],
    out_dir: str | os.PathLike,
    score_paths: Sequence[str | os.PathLike] | None = None,
    tasks_path: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
) -> None:
    """Merge samples with evaluations and write ANALYSIS_TABLES plus samples_evaluated.parquet.

    `tasks_path` (tasks.json): each task's validation findings go into sample_stats, and with
    analysis.exclude_flagged the flagged tasks are left out of every other table (named in every
    header as excluded_tasks)."""
    s = resolve_settings(settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_samples = merge_samples_and_evaluations(sample_paths, eval_paths, score_paths)
    validation = task_validation(tasks_path)
    excluded = [t for t in flagged_tasks(validation, s["exclude_flagged"]) if t in set(all_samples["task_id"].astype(str))]
    samples = all_samples[~all_samples["task_id"].astype(str).isin(excluded)].reset_index(drop=True)
    if samples.empty:
        raise ValueError(f"analysis.exclude_flagged left no task to analyse (excluded: {excluded})")
    if excluded:
        log.warning("analysis.exclude_flagged: %d flagged task(s) left out: %s", len(excluded), ", ".join(excluded))
    policy = primary_policy(samples, s["primary_policy"])
    s["primary_policy"] = policy
    prov = {**provenance, "settings": s, "n_samples": len(samples), "excluded_tasks": excluded,
            "surprisal_source": "scores" if score_paths else "sampling"}
    log.info("analysis: %d samples, %d tasks, policies %s", len(samples), samples["task_id"].nunique(),
             sorted(samples["policy"].unique()))
    write_parquet(out / MERGED_SAMPLES, all_samples, metadata={"provenance": prov})

    def table(name: str, df: pd.DataFrame, defs: Mapping[str, str]) -> None:
        write_table(df, out / ANALYSIS_TABLES[name], defs, prov, unit=TABLE_UNITS[name])

    boot, seed = int(s["bootstrap"]), int(s["seed"])
    table("sample_stats", sample_stats(all_samples, validation, excluded),
          definitions_for("fast_1", "fast_1_sig", "surprisal", "distinct_program", "reference_copy", "validation"))
    table("rejections", rejections_table(all_samples), definitions_for("distinct_program", "rejected"))
    table("outcomes", outcomes_table(samples, boot, seed),
          definitions_for("fast_1", "fast_1_sig", "distinct_program", "reference_copy", "rejected", "share_ci"))

    per_unit = select_all(samples)
    sel_defs = definitions_for("task_success", "unit", "surprisal", "rule.", "tie_breaking", "geomean_speedup",
                               "geomean_speedup_solvable", "success_ci", "n_timed", "fast_1")
    table("selection_per_task", per_unit, sel_defs)
    selection = aggregate_selection(per_unit, boot, seed)
    table("selection", selection, {**sel_defs, **definitions_for("geomean_ci")})

    table("comparisons", paired_comparisons(per_unit, boot, seed, primary_variant=s["primary_variant"]),
          definitions_for("task_success", "unit", "comparisons", "verdict", "geomean_speedup"))
    table("correlations", surprisal_correlations(samples, boot, seed),
          definitions_for("surprisal", "distinct_program", "correlations"))
    table("surprisal_quartiles", surprisal_quartiles(samples),
          definitions_for("surprisal", "distinct_program", "surprisal_quartiles", "fast_1"))
    table("logprob_spread", logprob_spread(samples, float(s["spread_threshold"])),
          definitions_for("surprisal", "logprob_spread", "fast_1"))
    table("correct_programs", correct_programs_table(samples),
          definitions_for("surprisal", "fast_1", "distinct_program", "reference_copy"))

    curves = unit_curves(samples, s["fast_p"])
    table("scaling_summary", saturation_table(curves),
          definitions_for("fast_p@k", "expected_best_speedup@k", "saturation_k"))
    table("equivalent_k", equivalent_k_table(selection, curves),
          definitions_for("k_matched", "task_success", "fast_p@k", "expected_best_speedup@k"))
    table("scaling", scaling_table(samples, s["k_values"], s["fast_p"], boot, seed),
          definitions_for("fast_p", "fast_p@k", "expected_best_speedup@k", "unit", "success_ci"))
    table("signal", signal_table(samples, policy, s["signal_targets"]), definitions_for("fast_1_sig"))
