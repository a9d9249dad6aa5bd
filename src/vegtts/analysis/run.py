"""The analysis stage: merged per-sample data and the CSV tables the figures and report read."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from vegtts.analysis.definitions import DEFAULT_VARIANT, SURPRISAL_VARIANTS, definitions_for
from vegtts.analysis.estimators import expected_best_speedup_at_k, fast_p_at_k, k_grid
from vegtts.analysis.merge import merge_samples_and_evaluations
from vegtts.analysis.selection import UNIT_KEYS, _cluster_bootstrap, aggregate_selection, select_all
from vegtts.analysis.statistics import (
    DEFAULT_SPREAD_THRESHOLD,
    logprob_spread,
    paired_comparisons,
    surprisal_correlations,
    surprisal_quartiles,
)
from vegtts.analysis.surprisal import NLL_COLUMNS, TAIL_COLUMNS
from vegtts.analysis.tables import write_table
from vegtts.io import write_parquet
from vegtts.records import STATUSES

log = logging.getLogger(__name__)

DEFAULT_SETTINGS: dict[str, Any] = {
    "k_values": "auto",
    "fast_p": [0, 1, 1.5, 2],
    "primary_variant": DEFAULT_VARIANT,
    "primary_policy": None,  # None: "base" if present, else the first policy in sort order
    "bootstrap": 2000,
    "seed": 0,
    "spread_threshold": DEFAULT_SPREAD_THRESHOLD,  # nats per token, see definition logprob_spread
    "signal_targets": {"share_correct": 0.25, "tasks_mixed_correctness": 8, "tasks_with_speed_signal": 4},
}

TABLE_FILES = {
    "sample_stats": "sample_stats.csv",
    "selection": "selection.csv",
    "selection_per_task": "selection_per_task.csv",
    "scaling": "scaling.csv",
    "signal": "signal.csv",
    "comparisons": "comparisons.csv",
    "correlations": "correlations.csv",
    "surprisal_quartiles": "surprisal_quartiles.csv",
    "logprob_spread": "logprob_spread.csv",
    "scaling_summary": "scaling_summary.csv",
    "equivalent_k": "equivalent_k.csv",
    "correct_samples": "correct_samples.csv",
}
# The tables the original workflow tracks; the others are new and listed for the lead to add.
SATURATION_POINTS, SATURATION_RATIO = 0.02, 0.98
MERGED_FILE = "samples_evaluated.parquet"


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {**DEFAULT_SETTINGS, **(settings or {})}
    out["signal_targets"] = {**DEFAULT_SETTINGS["signal_targets"], **(out.get("signal_targets") or {})}
    if out["primary_variant"] not in SURPRISAL_VARIANTS:
        raise ValueError(f"primary_variant must be one of {SURPRISAL_VARIANTS}, got {out['primary_variant']!r}")
    return out


def primary_policy(samples: pd.DataFrame, requested: str | None) -> str:
    policies = sorted(samples["policy"].unique())
    if requested:
        if requested not in policies:
            raise ValueError(f"primary_policy {requested!r} not in the data ({policies})")
        return requested
    return "base" if "base" in policies else policies[0]


def sample_stats(samples: pd.DataFrame) -> pd.DataFrame:
    """Per (policy, task): sample counts, shares with code / correct / fast_1 / fast_1_sig, statuses."""
    rows = []
    for (policy, task), g in samples.groupby(["policy", "task_id"], sort=True):
        correct = g["correct"].astype(bool)
        row = {
            "policy": policy, "task_id": task, "n_seeds": g["seed"].nunique(), "n_samples": len(g),
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
        rows.append(row)
    return pd.DataFrame(rows)


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
        boot = _cluster_bootstrap(by_task, units_per_task, n_boot, rng) if n_boot > 0 else None
        col = 0
        for metric, p in metrics:
            for k in ks:
                lo, hi = np.percentile(boot[:, col], [2.5, 97.5]) if boot is not None else (math.nan, math.nan)
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


def equivalent_k_table(selection: pd.DataFrame, curves: Mapping[str, Mapping[tuple[str, float | None], np.ndarray]]) -> pd.DataFrame:
    """Per rule: the smallest Best-of-N k whose oracle value reaches the rule's value at K."""
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
            rows.append({"policy": r["policy"], "rule": r["rule"], "variant": r["variant"], "kind": r["kind"],
                         "measure": measure, "rule_value": float(value), "K": len(curve),
                         "k_matched": int(reached[0]) + 1 if reached.size else math.nan,
                         "oracle_value_at_k_matched": float(curve[reached[0]]) if reached.size else math.nan})
    return pd.DataFrame(rows)


def correct_samples_table(samples: pd.DataFrame) -> pd.DataFrame:
    """The per-sample values of correct samples that figures need (length, NLL, speedup)."""
    cols = ["policy", "seed", "task_id", "sample_idx", "n_code_tokens", "n_tokens", "speedup", "fast_1",
            *NLL_COLUMNS, *[c for c in TAIL_COLUMNS if c in samples]]
    return samples.loc[samples["correct"].astype(bool), cols].reset_index(drop=True)


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
        ("share_correct", "share of all samples that are correct", float(pol["correct"].mean())),
        ("tasks_mixed_correctness", "tasks with both correct and incorrect samples", mixed),
        ("tasks_with_speed_signal",
         "tasks where some correct samples are measurably faster (speedup_lo > 1) and other correct samples are not", speed),
    ]
    return pd.DataFrame([
        {"check": name, "description": desc, "policy": policy, "value": value, "target": targets[name],
         "comparison": ">=", "pass": bool(value >= targets[name]), "n_tasks": len(per_task), "n_samples": len(pol)}
        for name, desc, value in checks
    ])


def run_analysis(
    sample_paths: Sequence[str | os.PathLike],
    eval_paths: Sequence[str | os.PathLike],
    settings: Mapping[str, Any] | None,
    provenance: Mapping[str, Any],
    out_dir: str | os.PathLike,
    score_paths: Sequence[str | os.PathLike] | None = None,
) -> None:
    """Merge samples with evaluations and write TABLE_FILES plus samples_evaluated.parquet."""
    s = resolve_settings(settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = merge_samples_and_evaluations(sample_paths, eval_paths, score_paths)
    policy = primary_policy(samples, s["primary_policy"])
    s["primary_policy"] = policy
    prov = {**provenance, "settings": s, "n_samples": len(samples), "surprisal_source": "scores" if score_paths else "sampling"}
    log.info("analysis: %d samples, %d tasks, policies %s", len(samples), samples["task_id"].nunique(),
             sorted(samples["policy"].unique()))
    write_parquet(out / MERGED_FILE, samples, metadata={"provenance": prov})

    defs_sample = definitions_for("fast_1", "fast_1_sig", "surprisal")
    write_table(sample_stats(samples), out / TABLE_FILES["sample_stats"], defs_sample, prov)

    per_unit = select_all(samples)
    sel_defs = definitions_for("task_success", "unit", "surprisal", "rule.", "tie_breaking", "geomean_speedup",
                               "geomean_speedup_solvable", "success_ci", "n_timed", "fast_1")
    write_table(per_unit, out / TABLE_FILES["selection_per_task"], sel_defs, prov)
    selection = aggregate_selection(per_unit, int(s["bootstrap"]), int(s["seed"]))
    write_table(selection, out / TABLE_FILES["selection"], {**sel_defs, **definitions_for("geomean_ci")}, prov)

    write_table(paired_comparisons(per_unit, int(s["bootstrap"]), int(s["seed"])), out / TABLE_FILES["comparisons"],
                definitions_for("task_success", "unit", "comparisons", "geomean_speedup"), prov)
    write_table(surprisal_correlations(samples), out / TABLE_FILES["correlations"],
                definitions_for("surprisal", "correlations"), prov)
    write_table(surprisal_quartiles(samples), out / TABLE_FILES["surprisal_quartiles"],
                definitions_for("surprisal", "surprisal_quartiles", "fast_1"), prov)
    write_table(logprob_spread(samples, float(s["spread_threshold"])), out / TABLE_FILES["logprob_spread"],
                definitions_for("surprisal", "logprob_spread", "fast_1"), prov)
    write_table(correct_samples_table(samples), out / TABLE_FILES["correct_samples"],
                definitions_for("surprisal", "fast_1"), prov)

    curves = unit_curves(samples, s["fast_p"])
    write_table(saturation_table(curves), out / TABLE_FILES["scaling_summary"],
                definitions_for("fast_p@k", "expected_best_speedup@k", "saturation_k"), prov)
    write_table(equivalent_k_table(selection, curves), out / TABLE_FILES["equivalent_k"],
                definitions_for("k_matched", "task_success", "fast_p@k", "expected_best_speedup@k"), prov)

    scaling = scaling_table(samples, s["k_values"], s["fast_p"], int(s["bootstrap"]), int(s["seed"]))
    write_table(scaling, out / TABLE_FILES["scaling"],
                definitions_for("fast_p", "fast_p@k", "expected_best_speedup@k", "unit", "success_ci"), prov)

    write_table(signal_table(samples, policy, s["signal_targets"]), out / TABLE_FILES["signal"],
                definitions_for("fast_1_sig"), prov)
