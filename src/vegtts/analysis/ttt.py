"""TTT analysis: trajectory, checkpoint selection, over-sharpening probe, compute, equal budget.

Reads a manifest (vegtts.plan.Plan.ttt_manifest): for every TTT seed and step (0 = the base
policy) two evaluated batches of K samples per task, "train" (the next update trains on it and
in-sample selection reads it) and "heldout" (a fresh batch of the same size from the same
checkpoint), the checkpoint folders and the probe's teacher-forced scores.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vegtts.analysis.constants import CEILING_TOLERANCE
from vegtts.analysis.estimators import fast_p_at_k
from vegtts.analysis.merge import merge_samples_and_evaluations
from vegtts.analysis.programs import distinct_programs
from vegtts.analysis.statistics import clustered_correlations
from vegtts.analysis.tables import write_table
from vegtts.io import read_parquet_metadata
from vegtts.outputs import TTT_TABLES

log = logging.getLogger(__name__)

BATCHES = ("train", "heldout")
RULES = ("boa_in_sample", "boa_held_out", "fixed_final", "early_stop", "per_task_oracle")
# Where each rule chooses (always the train batch) and what it reports on.
REPORT_BATCH = {"boa_in_sample": "train", "boa_held_out": "heldout", "fixed_final": "heldout",
                "early_stop": "heldout", "per_task_oracle": "heldout"}

DEFINITIONS = {
    "ttt_batches": "every TTT step s (0 = base policy, s >= 1 = the LoRA checkpoint after s updates) is sampled twice with K samples per task: batch train (sampling seed = TTT seed; update s+1 trains on it; selection rules choose on it) and batch heldout (sampling seed = TTT seed + 100000: a fresh batch of the same size); both use the same two sampling seeds at every step (common random numbers)",
    "fast_1_rate": "per-sample rate: share of a batch's samples (all TTT tasks pooled) that are correct with speedup > 1 (the paper's aggregate fast_1)",
    "task_success_ttt": "task-level: share of TTT tasks with at least one fast_1 sample among the K samples of the batch (Best-of-K from that checkpoint, oracle pick)",
    "rule.boa_in_sample": "Best-of-Adaptation as the paper: the step (1..S) with the highest fast_1_rate on its own train batch, reported on that same batch (optimistic: chosen and scored on the same samples)",
    "rule.boa_held_out": "choose the step (1..S) with the highest fast_1_rate on the train batch, report the heldout batch of that step",
    "rule.fixed_final": "always step S, reported on its heldout batch",
    "rule.early_stop": "walk steps 1..S on the train batch and stop at the first regression (fast_1_rate of step s < step s-1, s >= 2): choose s-1 (S if none), reported on the heldout batch",
    "rule.per_task_oracle": "for each task separately, the step (1..S) with the highest fast_1 rate of that task on the train batch; values are means over tasks, in-sample (train) and held-out (heldout) columns both given",
    "tie_breaking_ttt": "ties between steps go to the earliest step",
    "probe": "over-sharpening probe: base-policy samples of the TTT tasks drawn with the probe's own sampling seed (probe_seed in the header; no TTT update trains on it, unlike sampling seed r, whose first batch is what TTT seed r's first update trains on) scored teacher-forced under every checkpoint; step 0 uses the sampler's own log-probs; NLL = mean over code tokens (mean_code); counted in distinct programs (copies share one evaluation; their NLL is averaged); speedup of incorrect programs = 0",
    "probe_subsets": "one row per seed, step and subset: all = every probe program with code; correct = correct programs; slowest_quartile_of_correct = correct programs whose speedup <= the 25th percentile of the correct programs' speedups; each with n_samples, n_programs, n_tasks, pooled Spearman rho(NLL, speedup) over programs with a task-clustered bootstrap 95% interval, the mean within-task rho and its within-task permutation p (no p assuming independent programs); note says why rho is undefined (fewer than 3 programs, or NLL or speedup constant)",
    "rollouts": "samples drawn and evaluated; TTT methods spend (S+1)*K rollouts per task (train batches of steps 0..S); heldout batches are measurement, counted separately",
    "eval_seconds": "evaluation time spent: the eval_seconds of each distinct program of a batch evaluated there (copies of a program in the batch and programs served from the evaluation cache cost 0); eval_seconds_cached: what the cache hits had cost when first evaluated (not spent again); n_programs_evaluated and n_cache_hits count distinct programs",
    "prompt_tokens": "prompt length x rollouts (what a per-request API would bill; the sampler itself encodes each prompt once per batch)",
    "training_tokens": "completion tokens that entered an update's loss (forward and backward), from the checkpoint's vegtts_ttt_state.json",
    "bon_pool": "base samples of the TTT tasks used as the Best-of-N reference: the step-0 train and heldout batches of every TTT seed plus the experiment's base samples whose sampling seed is not one of those (no sample counted twice)",
    "bon_fast_1@k": "unbiased fast_1@k over each task's pooled base samples (1 - C(n-c,k)/C(n,k)), averaged over TTT tasks; defined for k <= the smallest pool",
    "equivalent_k": "like for like: the Best-of-N k whose task success fast_1@k equals the TTT rule's task success (Best-of-K on its reported batch); linear interpolation between consecutive integers k, with fast_1@0 = 0; at the curve's ceiling (TTT within 0.01 of the pool's fast_1 at its largest k) only a bound, 'at least k' with k where the curve first comes within 0.01 of its ceiling (where it touches the ceiling depends on the pool's size, not on TTT); '> n' when TTT is above the ceiling",
    "equivalent_k_paper_mixed": "the paper's mixed-kind comparison, for reference only: TTT's per-sample fast_1_rate matched against Best-of-N task success fast_1@k (same interpolation)",
    "per_sample_vs_base": "like for like per-sample: TTT rule's fast_1_rate minus the base pool's per-sample fast_1 rate (Best-of-N does not change the per-sample rate)",
}


# ---------------------------------------------------------------- loading


def _batch_frame(entry: Mapping[str, Any], batch: str) -> pd.DataFrame:
    b = entry[batch]
    df = merge_samples_and_evaluations(b["samples"], b["evaluations"])
    df["ttt_seed"], df["step"], df["batch"] = int(entry["seed"]), int(entry["step"]), batch
    return df


def load_batches(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Every TTT batch, merged with its evaluations, with columns ttt_seed, step, batch."""
    return pd.concat([_batch_frame(e, b) for e in manifest["steps"] for b in BATCHES], ignore_index=True)


# ---------------------------------------------------------------- trajectory


def per_task_table(batches: pd.DataFrame) -> pd.DataFrame:
    g = batches.groupby(["ttt_seed", "step", "batch", "policy", "task_id"], sort=True)
    out = g.agg(n=("fast_1", "size"), n_correct=("correct", "sum"), n_fast_1=("fast_1", "sum")).reset_index()
    out["fast_1_rate"] = out["n_fast_1"] / out["n"]
    out["any_fast_1"] = out["n_fast_1"] > 0
    return out


def trajectory_table(per_task: pd.DataFrame) -> pd.DataFrame:
    """Per (TTT seed, step, batch): per-sample fast_1 rate, share correct and task success."""
    g = per_task.groupby(["ttt_seed", "step", "batch", "policy"], sort=True)
    out = g.agg(n_tasks=("task_id", "size"), n_samples=("n", "sum"), n_correct=("n_correct", "sum"),
                n_fast_1=("n_fast_1", "sum"), task_success=("any_fast_1", "mean")).reset_index()
    out["share_correct"] = out["n_correct"] / out["n_samples"]
    out["fast_1_rate"] = out["n_fast_1"] / out["n_samples"]
    return out


# ---------------------------------------------------------------- checkpoint selection (pure)


def choose_boa(rates: Mapping[int, float]) -> int:
    """argmax over steps >= 1 of the rate; ties go to the earliest step."""
    candidates = sorted(s for s in rates if s >= 1)
    if not candidates:
        raise ValueError("no checkpoint steps (>= 1) to choose from")
    return max(candidates, key=lambda s: (rates[s], -s))


def choose_final(rates: Mapping[int, float]) -> int:
    return max(rates)


def choose_early_stop(rates: Mapping[int, float]) -> int:
    """Walk steps 1..S; at the first s >= 2 with rate(s) < rate(s-1), choose s-1; else S."""
    last = max(rates)
    for s in range(2, last + 1):
        if rates[s] < rates[s - 1]:
            return s - 1
    return last


CHOOSERS = {"boa_in_sample": choose_boa, "boa_held_out": choose_boa, "fixed_final": choose_final,
            "early_stop": choose_early_stop}


def selection_table(trajectory: pd.DataFrame, per_task: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per TTT seed and rule: chosen step, its values on the train and heldout batches, and the
    reported values (REPORT_BATCH); then one row per rule averaging the seeds."""
    rows = []
    for seed, traj in trajectory.groupby("ttt_seed", sort=True):
        val = {(int(r.step), r.batch): r for r in traj.itertuples()}
        rates = {s: float(val[(s, "train")].fast_1_rate) for s in sorted({s for s, _ in val})}
        n_steps = max(rates)
        for rule, choose in CHOOSERS.items():
            step = choose(rates)
            tr, ho = val[(step, "train")], val[(step, "heldout")]
            rep = tr if REPORT_BATCH[rule] == "train" else ho
            rows.append({"ttt_seed": seed, "rule": rule, "chosen_step": str(step), "report_batch": REPORT_BATCH[rule],
                         "fast_1_rate": rep.fast_1_rate, "task_success": rep.task_success,
                         "fast_1_rate_train": tr.fast_1_rate, "fast_1_rate_heldout": ho.fast_1_rate,
                         "task_success_train": tr.task_success, "task_success_heldout": ho.task_success,
                         "n_tasks": int(rep.n_tasks), "n_samples": int(rep.n_samples),
                         "rollouts_per_task": (n_steps + 1) * k})
        rows.append(_per_task_oracle_row(per_task[per_task["ttt_seed"] == seed], seed, n_steps, k))
    out = pd.DataFrame(rows)
    value_cols = ["fast_1_rate", "task_success", "fast_1_rate_train", "fast_1_rate_heldout",
                  "task_success_train", "task_success_heldout"]
    means = out.groupby("rule", sort=False)[value_cols].mean().reset_index()
    means["ttt_seed"], means["chosen_step"] = "mean", "-"
    means["report_batch"] = means["rule"].map(REPORT_BATCH)
    means["n_tasks"] = out.groupby("rule", sort=False)["n_tasks"].first().to_numpy()
    means["n_samples"] = out.groupby("rule", sort=False)["n_samples"].first().to_numpy()
    means["rollouts_per_task"] = out.groupby("rule", sort=False)["rollouts_per_task"].first().to_numpy()
    return pd.concat([out, means[out.columns]], ignore_index=True)


def _per_task_oracle_row(per_task: pd.DataFrame, seed: Any, n_steps: int, k: int) -> dict[str, Any]:
    chosen, tr_rate, ho_rate, tr_any, ho_any, n = [], [], [], [], [], 0
    for task, d in per_task.groupby("task_id", sort=True):
        t = d[d["batch"] == "train"].set_index("step")
        h = d[d["batch"] == "heldout"].set_index("step")
        step = choose_boa({int(s): float(r) for s, r in t["fast_1_rate"].items()})
        chosen.append(f"{task}:{step}")
        tr_rate.append(t.loc[step, "fast_1_rate"]), ho_rate.append(h.loc[step, "fast_1_rate"])
        tr_any.append(bool(t.loc[step, "any_fast_1"])), ho_any.append(bool(h.loc[step, "any_fast_1"]))
        n += int(h.loc[step, "n"])
    return {"ttt_seed": seed, "rule": "per_task_oracle", "chosen_step": " ".join(chosen), "report_batch": "heldout",
            "fast_1_rate": float(np.mean(ho_rate)), "task_success": float(np.mean(ho_any)),
            "fast_1_rate_train": float(np.mean(tr_rate)), "fast_1_rate_heldout": float(np.mean(ho_rate)),
            "task_success_train": float(np.mean(tr_any)), "task_success_heldout": float(np.mean(ho_any)),
            "n_tasks": len(chosen), "n_samples": n, "rollouts_per_task": (n_steps + 1) * k}


# ---------------------------------------------------------------- Best-of-N at equal budget


def bon_pool(batches: pd.DataFrame, base: pd.DataFrame | None, tasks: Sequence[str]) -> pd.DataFrame:
    """Base samples for the Best-of-N reference (definition bon_pool)."""
    step0 = batches[batches["step"] == 0].drop_duplicates(["task_id", "seed", "sample_idx"])
    frames = [step0[["task_id", "seed", "sample_idx", "fast_1"]]]
    if base is not None and len(base):
        extra = base[~base["seed"].isin(set(step0["seed"])) & base["task_id"].isin(tasks)]
        frames.append(extra[["task_id", "seed", "sample_idx", "fast_1"]])
    return pd.concat(frames, ignore_index=True)


def bon_curve(pool: pd.DataFrame) -> pd.DataFrame:
    """fast_1@k (task success of Best-of-k), averaged over tasks, k = 0..min pool size."""
    per_task = pool.groupby("task_id")["fast_1"].agg(["size", "sum"])
    n_min = int(per_task["size"].min())
    rows = [{"k": 0, "fast_1_at_k": 0.0, "n_tasks": len(per_task), "n_pool_min": n_min}]
    for k in range(1, n_min + 1):
        vals = [fast_p_at_k(int(n), int(c), k) for n, c in zip(per_task["size"], per_task["sum"])]
        rows.append({"k": k, "fast_1_at_k": float(np.mean(vals)), "n_tasks": len(per_task), "n_pool_min": n_min})
    return pd.DataFrame(rows)


def _interpolated_k(ks: np.ndarray, ys: np.ndarray, value: float) -> float:
    """The k where the nondecreasing curve first reaches `value` (linear between integers)."""
    i = int(np.flatnonzero(ys >= value - 1e-12)[0])
    if i == 0:
        return float(ks[0])
    lo, hi = ys[i - 1], ys[i]
    return float(ks[i - 1] + (value - lo) / (hi - lo)) if hi > lo else float(ks[i])


def equivalent_k(value: float, curve: pd.DataFrame, tolerance: float = CEILING_TOLERANCE) -> tuple[float, str]:
    """The k where the curve (k = 0, 1, ...; nondecreasing) reaches `value`, linearly interpolated
    between consecutive integers.  Within `tolerance` of the curve's ceiling (its value at the
    largest k) only a lower bound is identified: ("at least k"), k where the curve first comes within
    `tolerance` of the ceiling; above the ceiling (nan, '> n')."""
    ks, ys = curve["k"].to_numpy(int), curve["fast_1_at_k"].to_numpy(float)
    ceiling = float(ys[-1])
    if value > ceiling + tolerance:
        return math.nan, f"> {int(ks[-1])}"
    if value >= ceiling - tolerance and ceiling > 0:
        bound = _interpolated_k(ks, ys, ceiling - tolerance)
        return bound, f"at least {bound:.1f}"
    k = _interpolated_k(ks, ys, value)
    return k, ("0" if k == 0 else f"{k:.2f}")


def equal_budget_table(selection: pd.DataFrame, curve: pd.DataFrame, base_rate: float) -> pd.DataFrame:
    by_k = dict(zip(curve["k"], curve["fast_1_at_k"]))
    rows = []
    for r in selection.itertuples():
        budget = int(r.rollouts_per_task)
        ek, ek_text = equivalent_k(float(r.task_success), curve)
        mk, mk_text = equivalent_k(float(r.fast_1_rate), curve)
        rows.append({"ttt_seed": r.ttt_seed, "rule": r.rule, "budget_rollouts_per_task": budget,
                     "ttt_task_success": r.task_success, "bon_task_success_at_budget": by_k.get(budget, math.nan),
                     "bon_pool_min": int(curve["n_pool_min"].iloc[0]),
                     "ttt_fast_1_rate": r.fast_1_rate, "base_fast_1_rate": base_rate,
                     "per_sample_vs_base": float(r.fast_1_rate) - base_rate,
                     "equivalent_k": ek, "equivalent_k_text": ek_text,
                     "equivalent_k_paper_mixed": mk, "equivalent_k_paper_mixed_text": mk_text,
                     "interpolation": "linear between integer k, fast_1@0 = 0"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- over-sharpening probe


def probe_rows(programs: pd.DataFrame, col: str, n_boot: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One row per subset (all / correct / slowest quartile of correct) of distinct probe programs."""
    programs = programs[np.isfinite(programs[col].to_numpy(float))]
    correct = programs["correct"].astype(bool).to_numpy()
    speedup = programs["speedup"].to_numpy(float)
    cut = float(np.quantile(speedup[correct], 0.25)) if correct.any() else math.nan
    subsets = {"all": np.ones(len(programs), bool), "correct": correct,
               "slowest_quartile_of_correct": correct & (speedup <= cut)}
    rows = []
    for name, m in subsets.items():
        g = programs[m]
        nll, sp = g[col].to_numpy(float), g["speedup"].to_numpy(float)
        corr = clustered_correlations(nll, sp, np.zeros(len(g)), g["task_id"].to_numpy(), n_boot, rng)
        note = ""
        if len(g) < 3:
            note = f"undefined: {len(g)} program(s), fewer than 3"
        elif np.ptp(sp) == 0:
            note = "undefined: every program has the same speedup"
        elif np.ptp(nll) == 0:
            note = "undefined: every program has the same NLL"
        rows.append({"subset": name, "unit": "distinct programs", "n_samples": int(g["n_copies"].sum()),
                     "n_programs": len(g), "n_tasks": int(g["task_id"].nunique()),
                     "rho": corr["spearman_nll_speedup"], "rho_lo": corr["spearman_nll_speedup_lo"],
                     "rho_hi": corr["spearman_nll_speedup_hi"],
                     "mean_within_task_rho": corr["mean_within_task_spearman"],
                     "p_within_task_permutation": corr["p_within_task_permutation"],
                     "mean_nll": float(np.mean(nll)) if len(g) else math.nan,
                     "slowest_quartile_cut": cut if name == "slowest_quartile_of_correct" else math.nan, "note": note})
    return rows


def probe_table(manifest: Mapping[str, Any], variant: str = "mean_code", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per TTT seed, step (0 = base) and subset: rho(NLL, speedup) over distinct probe programs."""
    probe = manifest["probe"]
    col = f"nll_{variant}"
    rng = np.random.default_rng(seed)
    values = [col, "n_code_tokens"]
    base = merge_samples_and_evaluations(probe["samples"], probe["evaluations"])
    base_programs = distinct_programs(base, values)
    rows = []
    seeds = sorted({int(e["seed"]) for e in manifest["steps"]})
    for ttt_seed in seeds:
        for r in probe_rows(base_programs, col, n_boot, rng):
            rows.append({"ttt_seed": ttt_seed, "step": 0, "scorer": "base (sampler log-probs)", **r})
    for e in manifest["steps"]:
        if not e.get("score"):
            continue
        scored = merge_samples_and_evaluations(probe["samples"], probe["evaluations"], [e["score"]])
        for r in probe_rows(distinct_programs(scored, values), col, n_boot, rng):
            rows.append({"ttt_seed": int(e["seed"]), "step": int(e["step"]), "scorer": e["policy"], **r})
    out = pd.DataFrame(rows)
    if len(out):
        out.insert(3, "n_probe_samples", len(base))
        out = out.sort_values(["ttt_seed", "step"], kind="mergesort").reset_index(drop=True)
    return out


# ---------------------------------------------------------------- compute accounting


def _sample_costs(paths: Sequence[str]) -> dict[str, float]:
    rollouts = prompt = completion = seconds = 0.0
    for p in paths:
        df = pd.read_parquet(p, columns=["n_tokens", "n_prompt_tokens"])
        rollouts += len(df)
        prompt += float(df["n_prompt_tokens"].sum())
        completion += float(df["n_tokens"].sum())
        seconds += float(read_parquet_metadata(p).get("sampling_seconds", math.nan))
    return {"rollouts": rollouts, "prompt_tokens": prompt, "completion_tokens": completion, "sampling_seconds": seconds}


def eval_costs(paths: Sequence[str]) -> dict[str, float]:
    """Evaluation time a batch spent (definition eval_seconds): each distinct program of a task once;
    cache hits at 0, with what they had cost kept apart."""
    spent = cached = n_eval = n_hits = 0.0
    for p in paths:
        df = pd.read_parquet(p)
        code = df["code_sha256"].fillna("").astype(str) if "code_sha256" in df else pd.Series("", index=df.index)
        firsts = df[code.ne("")].drop_duplicates(subset=["code_sha256"], keep="first") if "code_sha256" in df else df
        hit = firsts["cached"].fillna(False).astype(bool) if "cached" in firsts else pd.Series(False, index=firsts.index)
        seconds = firsts["eval_seconds"].fillna(0.0).astype(float)
        spent += float(seconds[~hit].sum())
        cached += float(seconds[hit].sum())
        n_eval += int((~hit).sum())
        n_hits += int(hit.sum())
    return {"eval_seconds": spent, "eval_seconds_cached": cached, "n_programs_evaluated": n_eval, "n_cache_hits": n_hits}


def compute_table(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Rollouts, tokens and wall time per (method, TTT seed, step)."""
    rows = []
    for e in manifest["steps"]:
        for batch in BATCHES:
            c = _sample_costs(e[batch]["samples"])
            rows.append({"method": f"sample_{batch}", "ttt_seed": e["seed"], "step": e["step"], **c,
                         "training_tokens": 0, **eval_costs(e[batch]["evaluations"]),
                         "train_seconds": 0.0, "score_seconds": 0.0})
        if e.get("checkpoint"):
            state = json.loads((Path(e["checkpoint"]) / "vegtts_ttt_state.json").read_text())
            st = state.get("stats", {})
            rows.append({"method": "ttt_update", "ttt_seed": e["seed"], "step": e["step"], "rollouts": 0,
                         "prompt_tokens": st.get("n_prompt_tokens", 0), "completion_tokens": 0,
                         "sampling_seconds": 0.0, "training_tokens": st.get("n_train_tokens", 0), "eval_seconds": 0.0,
                         "train_seconds": st.get("wall_seconds", math.nan), "score_seconds": 0.0,
                         "peak_rss_mb": st.get("peak_rss_mb", math.nan)})
        if e.get("score"):
            meta = read_parquet_metadata(e["score"])
            rows.append({"method": "probe_scoring", "ttt_seed": e["seed"], "step": e["step"], "rollouts": 0,
                         "prompt_tokens": meta.get("n_prompt_tokens", 0), "completion_tokens": meta.get("n_scored_tokens", 0),
                         "sampling_seconds": 0.0, "training_tokens": 0, "eval_seconds": 0.0, "train_seconds": 0.0,
                         "score_seconds": meta.get("scoring_seconds", math.nan)})
    out = pd.DataFrame(rows)
    for col in ("eval_seconds_cached", "n_programs_evaluated", "n_cache_hits"):
        out[col] = out[col].fillna(0.0) if col in out else 0.0
    # Time spent: cache hits cost nothing (their original cost stays in eval_seconds_cached).
    out["wall_seconds"] = out[["sampling_seconds", "eval_seconds", "train_seconds", "score_seconds"]].sum(axis=1)
    return out


def compute_summary(compute: pd.DataFrame, n_tasks: int, k: int, n_steps: int) -> pd.DataFrame:
    """Per TTT seed: what TTT (train batches + updates) and Best-of-N at the same rollouts cost."""
    rows = []
    for seed, d in compute.groupby("ttt_seed", sort=True):
        ttt = d[d["method"].isin(["sample_train", "ttt_update"])]
        base = d[(d["method"] == "sample_train") & (d["step"] == 0)]
        scale = n_steps + 1  # Best-of-N at equal rollouts draws (S+1) base batches of K
        rows.append({"ttt_seed": seed, "step": "all", "method": "ttt (train batches + updates)", "rollouts": ttt["rollouts"].sum(),
                     "prompt_tokens": ttt["prompt_tokens"].sum(), "completion_tokens": ttt["completion_tokens"].sum(),
                     "training_tokens": ttt["training_tokens"].sum(), "wall_seconds": ttt["wall_seconds"].sum(),
                     "eval_seconds_cached": ttt["eval_seconds_cached"].sum() if "eval_seconds_cached" in ttt else 0.0})
        rows.append({"ttt_seed": seed, "step": "all", "method": f"best_of_n (N = {scale * k}; step-0 cost x {scale})",
                     "rollouts": base["rollouts"].sum() * scale, "prompt_tokens": base["prompt_tokens"].sum() * scale,
                     "completion_tokens": base["completion_tokens"].sum() * scale, "training_tokens": 0,
                     "wall_seconds": base["wall_seconds"].sum() * scale})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- entry point


TTT_UNITS = {
    "trajectory": "per (TTT seed, step, batch): samples (n_samples, rates over samples) and tasks (task_success)",
    "per_task": "per (TTT seed, step, batch, task): samples",
    "selection": "per TTT seed and rule (and their mean): rates over samples, task success over tasks",
    "probe": "distinct programs of the probe samples (n_programs; n_samples for reference); intervals resample tasks",
    "compute": "per method, TTT seed and step: rollouts = samples; eval time over distinct programs (cache hits at 0)",
    "equal_budget": "per TTT seed and rule: task success over tasks, per-sample rates over samples; k counts samples per task",
    "bon_curve": "Best-of-N over the base pool's samples, mean over TTT tasks",
}


def run_ttt_analysis(manifest: Mapping[str, Any], provenance: Mapping[str, Any], out_dir: str | os.PathLike,
                     variant: str = "mean_code", n_boot: int = 1000, seed: int = 0) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = int(manifest["k"])
    tasks = list(manifest["tasks"])
    prov = {**provenance, "ttt_tasks": tasks, "ttt_k": k, "probe_seed": manifest["probe"]["sampling_seed"]}
    batches = load_batches(manifest)
    n_steps = int(batches["step"].max())
    per_task = per_task_table(batches)
    traj = trajectory_table(per_task)
    selection = selection_table(traj, per_task, k)
    base = merge_samples_and_evaluations(manifest["base"]["samples"], manifest["base"]["evaluations"])
    pool = bon_pool(batches, base, tasks)
    curve = bon_curve(pool)
    base_rate = float(pool["fast_1"].mean())
    compute = compute_table(manifest)
    d = {key: DEFINITIONS[key] for key in DEFINITIONS}

    def table(name: str, df: pd.DataFrame, keys: Sequence[str]) -> Path:
        return write_table(df, out / TTT_TABLES[name], {k_: d[k_] for k_ in keys}, prov, unit=TTT_UNITS[name])

    written = [
        table("trajectory", traj, ("ttt_batches", "fast_1_rate", "task_success_ttt")),
        table("per_task", per_task, ("ttt_batches", "fast_1_rate")),
        table("selection", selection, [k_ for k_ in d if k_.startswith("rule.") or k_ in (
            "ttt_batches", "fast_1_rate", "task_success_ttt", "tie_breaking_ttt", "rollouts")]),
        table("probe", probe_table(manifest, variant, n_boot, seed), ("probe", "probe_subsets")),
        table("compute", pd.concat([compute, compute_summary(compute, len(tasks), k, n_steps)], ignore_index=True),
              ("rollouts", "prompt_tokens", "training_tokens", "eval_seconds")),
        table("equal_budget", equal_budget_table(selection, curve, base_rate),
              ("bon_pool", "bon_fast_1@k", "equivalent_k", "equivalent_k_paper_mixed", "per_sample_vs_base", "rollouts")),
        table("bon_curve", curve, ("bon_pool", "bon_fast_1@k")),
    ]
    log.info("ttt analysis: %d seeds, %d steps, %d tasks -> %s", batches["ttt_seed"].nunique(), n_steps, len(tasks), out)
    return written
