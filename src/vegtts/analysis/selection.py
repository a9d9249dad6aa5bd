"""Selection rules among the correct samples of a unit (one policy, seed and task).

Every rule returns the selected sample (or an exact expectation, for random rules), whether
it is fast_1 (task success) and its speedup.  A unit without a correct sample fails every
rule with speedup 0.  Ties in a ranking go to the smallest sample_idx; NaN NLL ranks last.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from vegtts.analysis.definitions import GEOMEAN_EPS, SURPRISAL_VARIANTS
from vegtts.analysis.estimators import expected_max_at_k, fast_p_at_k

log = logging.getLogger(__name__)

UNIT_KEYS = ["policy", "seed", "task_id"]
NO_VARIANT = "-"
TOP_N = 3

# (rule, uses a surprisal variant, kind); order = display order in tables and figures.
RULES: tuple[tuple[str, bool, str], ...] = (
    ("oracle", False, "main"),
    ("surprisal_top3", True, "main"),
    ("surprisal", True, "main"),
    ("random", False, "main"),
    ("most_confident", True, "main"),
    ("random_top3", False, "control"),
    ("shortest", False, "control"),
    ("longest", False, "control"),
)
RULE_ORDER = [r for r, _, _ in RULES]


def display_order(rule: str, variant: str) -> tuple[int, int]:
    """Rules in RULE_ORDER, variants in SURPRISAL_VARIANTS order (unknown ones last)."""
    r = RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)
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
    n_timed: int  # timings spent beyond correctness checking
    expected: bool  # True for exact-expectation rules


def _log_floor(speedup: np.ndarray | float) -> np.ndarray | float:
    return np.log(np.maximum(speedup, GEOMEAN_EPS))


def rank(values: np.ndarray, sample_idx: np.ndarray, descending: bool) -> np.ndarray:
    """Positions sorted by value (NaN last), ties by smallest sample_idx."""
    v = np.asarray(values, dtype=float)
    nan = np.isnan(v)
    key = np.where(nan, 0.0, -v if descending else v)
    # lexsort: last key is primary.
    return np.lexsort((np.asarray(sample_idx), key, nan))


def _fastest(speedup: np.ndarray, sample_idx: np.ndarray, among: np.ndarray) -> int:
    order = rank(speedup[among], sample_idx[among], descending=True)
    return int(among[order[0]])


def _pick(rule: str, variant: str, kind: str, pos: int, c: dict[str, np.ndarray], n_timed: int) -> Selection:
    s = float(c["speedup"][pos])
    return Selection(rule, variant, kind, int(c["sample_idx"][pos]), float(bool(c["fast_1"][pos])), s,
                     float(_log_floor(s)), n_timed, False)


def select_unit(unit: pd.DataFrame, variants: Sequence[str] = SURPRISAL_VARIANTS) -> list[Selection]:
    """Apply every rule (NLL rules under every variant) to the samples of one unit."""
    correct = unit[unit["correct"].astype(bool)]
    kinds = {r: k for r, _, k in RULES}
    nc = len(correct)
    if nc == 0:
        out = []
        for rule, uses_variant, kind in RULES:
            for v in (variants if uses_variant else [NO_VARIANT]):
                out.append(Selection(rule, v, kind, -1, 0.0, 0.0, float(_log_floor(0.0)), 0, rule.startswith("random")))
        return out

    c = {
        "sample_idx": correct["sample_idx"].to_numpy(),
        "speedup": correct["speedup"].to_numpy(dtype=float),
        "fast_1": correct["fast_1"].to_numpy(dtype=bool),
        "n_code_tokens": correct["n_code_tokens"].to_numpy(dtype=float),
    }
    idx, sp = c["sample_idx"], c["speedup"]
    every = np.arange(nc)
    out: list[Selection] = [_pick("oracle", NO_VARIANT, kinds["oracle"], _fastest(sp, idx, every), c, nc)]

    out.append(Selection("random", NO_VARIANT, kinds["random"], -1, float(c["fast_1"].mean()), float(sp.mean()),
                         float(np.mean(_log_floor(sp))), 1, True))
    m = min(TOP_N, nc)
    out.append(Selection("random_top3", NO_VARIANT, kinds["random_top3"], -1,
                         fast_p_at_k(nc, int(c["fast_1"].sum()), m), expected_max_at_k(sp, m),
                         expected_max_at_k(_log_floor(sp), m), m, True))
    length = c["n_code_tokens"]
    out.append(_pick("shortest", NO_VARIANT, kinds["shortest"], int(rank(length, idx, False)[0]), c, 1))
    out.append(_pick("longest", NO_VARIANT, kinds["longest"], int(rank(length, idx, True)[0]), c, 1))

    for v in variants:
        nll = correct[f"nll_{v}"].to_numpy(dtype=float)
        out.append(_pick("most_confident", v, kinds["most_confident"], int(rank(nll, idx, False)[0]), c, 1))
        by_surprisal = rank(nll, idx, True)
        out.append(_pick("surprisal", v, kinds["surprisal"], int(by_surprisal[0]), c, 1))
        top = by_surprisal[:m]
        out.append(_pick("surprisal_top3", v, kinds["surprisal_top3"], _fastest(sp, idx, top), c, m))
    return sorted(out, key=lambda s: display_order(s.rule, s.variant))


def select_all(samples: pd.DataFrame, variants: Sequence[str] = SURPRISAL_VARIANTS) -> pd.DataFrame:
    """Per-unit selections: one row per (policy, seed, task_id, rule, variant)."""
    rows = []
    groups = samples.groupby(UNIT_KEYS, sort=True)
    for key, unit in tqdm(groups, total=groups.ngroups, desc="selection", disable=groups.ngroups < 50):
        n_correct = int(unit["correct"].sum())
        base = dict(zip(UNIT_KEYS, key), n_samples=len(unit), n_correct=n_correct)
        rows.extend({**base, **asdict(s)} for s in select_unit(unit, variants))
    return pd.DataFrame(rows)


def _cluster_bootstrap(
    per_task_values: np.ndarray, per_task_units: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap draws (n_boot x n_cols) of unit-weighted means, resampling tasks with replacement."""
    n_tasks = per_task_units.size
    draws = rng.integers(0, n_tasks, size=(n_boot, n_tasks))
    counts = np.zeros((n_boot, n_tasks))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_tasks), draws.ravel()), 1.0)
    return (counts @ per_task_values) / (counts @ per_task_units)[:, None]


def aggregate_selection(per_unit: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (policy, rule, variant): success rate with a task-clustered bootstrap CI, the paired
    difference to the random rule with its CI, and mean / geometric-mean selected speedups."""
    rows = []
    rng = np.random.default_rng(seed)
    for policy, pol in per_unit.groupby("policy", sort=True):
        pol = pol.assign(col=pol["rule"] + "|" + pol["variant"])
        success = pol.pivot_table(index=["task_id", "seed"], columns="col", values="success", aggfunc="first")
        by_task = success.groupby(level="task_id").sum()
        units = success.groupby(level="task_id").size().to_numpy(dtype=float)
        if n_boot > 0:
            boot = _cluster_bootstrap(by_task.to_numpy(), units, n_boot, rng)
            ref = by_task.columns.get_loc("random|-") if "random|-" in by_task.columns else None
        for (rule, variant), g in pol.groupby(["rule", "variant"], sort=False):
            col = by_task.columns.get_loc(f"{rule}|{variant}")
            solvable = g["n_correct"] > 0
            row = {
                "policy": policy, "rule": rule, "variant": variant, "kind": g["kind"].iloc[0],
                "n_tasks": g["task_id"].nunique(), "n_units": len(g), "n_units_solvable": int(solvable.sum()),
                "success_rate": float(g["success"].mean()),
                "success_lo": math.nan, "success_hi": math.nan,
                "diff_vs_random": math.nan, "diff_lo": math.nan, "diff_hi": math.nan,
                "mean_speedup": float(g["selected_speedup"].mean()),
                "geomean_speedup": float(np.exp(g["selected_log_speedup"].mean())),
                "geomean_speedup_solvable": float(np.exp(g.loc[solvable, "selected_log_speedup"].mean()))
                if solvable.any() else math.nan,
                "mean_n_timed": float(g["n_timed"].mean()),
            }
            if n_boot > 0:
                row["success_lo"], row["success_hi"] = np.percentile(boot[:, col], [2.5, 97.5])
                if ref is not None:
                    row["diff_vs_random"] = row["success_rate"] - float(
                        pol.loc[pol["col"] == "random|-", "success"].mean())
                    row["diff_lo"], row["diff_hi"] = np.percentile(boot[:, col] - boot[:, ref], [2.5, 97.5])
            rows.append(row)
    out = pd.DataFrame(rows)
    out["_o"] = [display_order(r, v) for r, v in zip(out["rule"], out["variant"])]
    return out.sort_values(["policy", "_o"], kind="mergesort").drop(columns="_o").reset_index(drop=True)
