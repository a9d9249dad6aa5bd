"""Every selection rule (vegtts.analysis.rules) applied to every unit (one policy, seed and task),
and the rules' success rates and speedups with task-clustered intervals."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from vegtts.analysis.constants import SURPRISAL_VARIANTS
from vegtts.analysis.rules import NO_VARIANT, RULES, UnitSamples
from vegtts.analysis.rules.base import log_floor

log = logging.getLogger(__name__)

UNIT_KEYS = ["policy", "seed", "task_id"]
RULE_ORDER = list(RULES.names())  # display order in tables and figures


def display_order(rule: str, variant: str) -> tuple[int, int]:
    """Rules in registration order (vegtts.analysis.rules), variants in SURPRISAL_VARIANTS order (unknown ones last)."""
    names = RULES.names()
    r = names.index(rule) if rule in names else len(names)
    v = SURPRISAL_VARIANTS.index(variant) if variant in SURPRISAL_VARIANTS else (-1 if variant == NO_VARIANT else 99)
    return r, v


@dataclass
class Selection:
    rule: str
    variant: str
    kind: str
    selected_sample_idx: int  # -1: none (no correct sample) or an expectation over samples
    success: float  # 1/0, or the exact probability for random rules
    selected_speedup: float  # speedup (expectation for random rules); 0 on failure
    selected_log_speedup: float  # log(max(speedup, GEOMEAN_EPS)) (expectation for random rules)
    n_timed: float  # timings spent beyond correctness checking
    n_evaluated: float  # correctness checks spent by the deployable variant (expectation for random rules)
    expected: bool  # True for exact-expectation rules


def select_unit(unit: pd.DataFrame, variants: Sequence[str] = SURPRISAL_VARIANTS) -> list[Selection]:
    """Apply every rule (per-variant rules under every variant) to the samples of one unit."""
    samples = UnitSamples(unit)
    out: list[Selection] = []
    for rule in RULES:
        for variant in variants if rule.per_variant else (NO_VARIANT,):
            p = rule.select(samples, variant)
            out.append(Selection(rule.name, variant, rule.kind, p.sample_idx, p.success, p.speedup, p.log_speedup,
                                 p.n_timed, p.n_evaluated, p.expected))
    return sorted(out, key=lambda s: display_order(s.rule, s.variant))


def select_all(samples: pd.DataFrame, variants: Sequence[str] = SURPRISAL_VARIANTS) -> pd.DataFrame:
    """Per-unit selections: one row per (policy, seed, task_id, rule, variant)."""
    rows = []
    groups = samples.groupby(UNIT_KEYS, sort=True)
    for key, unit in tqdm(groups, total=groups.ngroups, desc="selection", disable=groups.ngroups < 50):
        n_correct = int(unit["correct"].sum())
        logs = log_floor(unit.loc[unit["correct"].astype(bool), "speedup"].to_numpy(float))
        base = dict(zip(UNIT_KEYS, key), n_samples=len(unit), n_correct=n_correct,
                    log_speedup_spread=float(np.ptp(logs)) if logs.size else 0.0)
        rows.extend({**base, **asdict(s)} for s in select_unit(unit, variants))
    return pd.DataFrame(rows)


def bootstrap_counts(n_tasks: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot x n_tasks) multiplicities of each task in each task-resampled bootstrap draw."""
    draws = rng.integers(0, n_tasks, size=(n_boot, n_tasks))
    counts = np.zeros((n_boot, n_tasks))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_tasks), draws.ravel()), 1.0)
    return counts


# ---------------------------------------------------------------- intervals over tasks
#
# Task-clustered Bayesian bootstrap with range anchors.  A draw weights every task by a Gamma(1)
# variate (normalised: Dirichlet(1, ..., 1); all seeds of a task share its weight) and adds two
# pseudo-tasks at the ends of the quantity's range with Gamma(ANCHOR_WEIGHT) weights.  Why: rule
# differences are zero in most tasks (the rules pick the same program), so a plain percentile
# bootstrap over a dozen tasks gives [0, 0] or one-sided intervals that miss the truth (it covered
# a planted difference in 71% of simulated experiments; analysis.synthetic.comparison_coverage).
# The anchors keep an interval from claiming more than a dozen agreeing tasks can show: for a 0/1
# outcome the draws follow Beta(s + 0.25, f + 0.25), a Jeffreys-like interval.

ANCHOR_WEIGHT = 0.25


def bootstrap_weights(n_tasks: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot x (n_tasks + 2)) unnormalised weights: Gamma(1) per task, then Gamma(ANCHOR_WEIGHT)
    for the low and the high anchor pseudo-task (the last two columns)."""
    tasks = rng.gamma(1.0, size=(n_boot, n_tasks))
    anchors = rng.gamma(ANCHOR_WEIGHT, size=(n_boot, 2))
    return np.concatenate([tasks, anchors], axis=1)


def weighted_ratio_draws(weights: np.ndarray, sums: np.ndarray, units: np.ndarray,
                         anchors: tuple[float, float] | None) -> np.ndarray:
    """Draws of (sum of per-task sums) / (sum of per-task units) under `weights`; with `anchors`
    (low, high) the two pseudo-tasks carry those values over the mean units of a task, without
    them the anchor columns are ignored.  `sums` may be 2-D (tasks x columns)."""
    n = units.size
    w, wa = weights[:, :n], weights[:, n:]
    num, den = w @ sums, w @ units
    if anchors is not None:
        u = float(units.mean()) if n else 1.0
        lo, hi = anchors
        extra = (wa[:, 0] * lo + wa[:, 1] * hi) * u
        num = num + (extra[:, None] if num.ndim == 2 else extra)
        den = den + wa.sum(axis=1) * u
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / (den[:, None] if num.ndim == 2 else den)


def percentile_ci(draws: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the finite draws (NaN if none)."""
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def interval_including(draws: np.ndarray, estimate: float) -> tuple[float, float]:
    """percentile_ci of the draws, widened to contain the point estimate: at the edge of the range
    (a rate of 0 or 1, no difference at all) the anchored draws sit just inside it, and the
    interval's end is the edge itself (as a Jeffreys interval's is at 0 or n successes)."""
    lo, hi = percentile_ci(draws)
    if not (np.isfinite(lo) and np.isfinite(estimate)):
        return lo, hi
    return min(lo, float(estimate)), max(hi, float(estimate))


class UnitMatrix:
    """Per-unit values of every (rule, variant) of one policy, with task sums for paired intervals."""

    def __init__(self, pol: pd.DataFrame):
        pol = pol.assign(col=pol["rule"] + "|" + pol["variant"])
        idx = ["task_id", "seed"]
        self.success = pol.pivot_table(index=idx, columns="col", values="success", aggfunc="first")
        self.log_speedup = pol.pivot_table(index=idx, columns="col", values="selected_log_speedup", aggfunc="first")
        solvable = pol.groupby(idx)["n_correct"].first().reindex(self.success.index) > 0
        self.solvable = solvable.to_numpy(dtype=float)
        self.tasks = self.success.index.get_level_values("task_id").to_numpy()
        self.task_order = sorted(set(self.tasks))
        self._task_index = np.searchsorted(np.array(self.task_order, dtype=object), self.tasks)
        self.units_per_task = self._sum(np.ones(len(self.tasks)))
        self.solvable_per_task = self._sum(self.solvable)
        # The range anchor of a log speedup ratio: the largest spread of log speedups among the correct
        # samples of any unit (no two rules can differ by more on any observed task); without the
        # column, the largest spread between the rules' picks.
        if "log_speedup_spread" in pol:
            spread = pol.groupby(idx)["log_speedup_spread"].first().reindex(self.success.index).to_numpy(float)
        else:
            spread = (self.log_speedup.max(axis=1) - self.log_speedup.min(axis=1)).to_numpy(float)
        spread = spread[self.solvable.astype(bool) & np.isfinite(spread)]
        self.log_ratio_range = float(spread.max()) if spread.size else 0.0
        self._draws: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self._task_index, weights=values, minlength=len(self.task_order))

    def task_sums(self, frame: pd.DataFrame, col: str, weights: np.ndarray | None = None) -> np.ndarray:
        v = frame[col].to_numpy(dtype=float)
        return self._sum(v * weights if weights is not None else v)

    def _cached(self, key: tuple, weights: np.ndarray, make) -> np.ndarray:
        full = (*key, id(weights))
        if full not in self._draws:
            self._draws[full] = (weights, make())  # keep the weights alive so that their id stays unique
        return self._draws[full][1]

    def rate_draws(self, col: str, weights: np.ndarray) -> np.ndarray:
        """A rule's task success: anchors at 0 and 1."""
        return self._cached(("rate", col), weights, lambda: weighted_ratio_draws(
            weights, self.task_sums(self.success, col), self.units_per_task, (0.0, 1.0)))

    def rate_diff_draws(self, col_a: str, col_b: str, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Paired task-success draws of two rules with the anchors of their difference: one
        pseudo-task where only b succeeds, one where only a does (difference -1 and +1)."""
        n = len(self.task_order)
        both = np.stack([self.task_sums(self.success, col_a), self.task_sums(self.success, col_b)], axis=1)
        w, wa = weights[:, :n], weights[:, n:]
        den = w @ self.units_per_task + wa.sum(axis=1)
        num = w @ both + np.stack([wa[:, 1], wa[:, 0]], axis=1)  # a=1 in the high anchor, b=1 in the low
        return num[:, 0] / den, num[:, 1] / den

    def log_geomean_draws(self, col: str, weights: np.ndarray, solvable_only: bool = False) -> np.ndarray:
        """A rule's mean log speedup (no anchors: a level, not a difference)."""
        if solvable_only:
            return self._cached(("log_solvable", col), weights, lambda: weighted_ratio_draws(
                weights, self.task_sums(self.log_speedup, col, self.solvable), self.solvable_per_task, None))
        return self._cached(("log", col), weights, lambda: weighted_ratio_draws(
            weights, self.task_sums(self.log_speedup, col), self.units_per_task, None))

    def log_ratio_draws(self, col_a: str, col_b: str, weights: np.ndarray, solvable_only: bool = False) -> np.ndarray:
        """Mean log speedup of a minus b, anchored at -+ log_ratio_range."""
        mask = self.solvable if solvable_only else None
        units = self.solvable_per_task if solvable_only else self.units_per_task
        diff = self.task_sums(self.log_speedup, col_a, mask) - self.task_sums(self.log_speedup, col_b, mask)
        r = self.log_ratio_range
        return weighted_ratio_draws(weights, diff, units, (-r, r))


def aggregate_selection(per_unit: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (policy, rule, variant): success rate and geometric-mean speedups with task-clustered
    intervals (anchored Bayesian bootstrap, see bootstrap_weights), the paired difference to the
    random rule with its interval, and the costs."""
    rows = []
    rng = np.random.default_rng(seed)
    for policy, pol in per_unit.groupby("policy", sort=True):
        mat = UnitMatrix(pol)
        weights = bootstrap_weights(len(mat.task_order), n_boot, rng) if n_boot > 0 else None
        ref = "random|-" if "random|-" in mat.success.columns else None
        for (rule, variant), g in pol.groupby(["rule", "variant"], sort=False):
            col = f"{rule}|{variant}"
            solvable = g["n_correct"] > 0
            row = {
                "policy": policy, "rule": rule, "variant": variant, "kind": g["kind"].iloc[0],
                "n_tasks": g["task_id"].nunique(), "n_units": len(g), "n_units_solvable": int(solvable.sum()),
                "success_rate": float(g["success"].mean()),
                "success_lo": math.nan, "success_hi": math.nan,
                "diff_vs_random": math.nan, "diff_lo": math.nan, "diff_hi": math.nan,
                "mean_speedup": float(g["selected_speedup"].mean()),
                "geomean_speedup": float(np.exp(g["selected_log_speedup"].mean())),
                "geomean_lo": math.nan, "geomean_hi": math.nan,
                "geomean_speedup_solvable": float(np.exp(g.loc[solvable, "selected_log_speedup"].mean()))
                if solvable.any() else math.nan,
                "geomean_solvable_lo": math.nan, "geomean_solvable_hi": math.nan,
                "mean_n_timed": float(g["n_timed"].mean()),
                "mean_n_evaluated": float(g["n_evaluated"].mean()),
                "mean_n_samples": float(g["n_samples"].mean()),
            }
            if ref:
                row["diff_vs_random"] = row["success_rate"] - float(mat.success[ref].mean())
            if weights is not None:
                row["success_lo"], row["success_hi"] = interval_including(mat.rate_draws(col, weights), row["success_rate"])
                row["geomean_lo"], row["geomean_hi"] = np.exp(interval_including(
                    mat.log_geomean_draws(col, weights), math.log(row["geomean_speedup"])))
                row["geomean_solvable_lo"], row["geomean_solvable_hi"] = np.exp(interval_including(
                    mat.log_geomean_draws(col, weights, solvable_only=True),
                    math.log(row["geomean_speedup_solvable"]) if solvable.any() else math.nan))
                if ref == col:  # random against itself: identically 0
                    row["diff_lo"] = row["diff_hi"] = 0.0
                elif ref:
                    ra, rb = mat.rate_diff_draws(col, ref, weights)
                    row["diff_lo"], row["diff_hi"] = interval_including(ra - rb, row["diff_vs_random"])
            rows.append(row)
    out = pd.DataFrame(rows)
    out["_o"] = [display_order(r, v) for r, v in zip(out["rule"], out["variant"])]
    return out.sort_values(["policy", "_o"], kind="mergesort").drop(columns="_o").reset_index(drop=True)
