"""Paired rule comparisons and surprisal-speedup correlations (the paper's §5.2 statistics).

Comparisons pair units (every rule sees the same samples): paired task-clustered bootstrap CIs
of the rate difference, of Cohen's h and of the geometric-mean speedup ratio; an exact one-sided
sign test and exact McNemar test on discordant units, and a two-sided Wilcoxon signed-rank test
on log(speedup_a / speedup_b) with speedup 0 replaced by 1e-6, as in the paper.  Correlations are
over correct samples: Spearman rho(NLL, speedup), the partial rho controlling for code length
(Pearson correlation of rank residuals), and rho(length, speedup).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from vegtts.analysis.definitions import SURPRISAL_VARIANTS

ZERO_SPEEDUP = 1e-6
# (rule_a, rule_b): the paper's two comparisons first, then each candidate rule against its control.
COMPARISONS = (
    ("surprisal", "most_confident"),
    ("surprisal_top3", "surprisal"),
    ("surprisal", "random"),
    ("most_confident", "random"),
    ("surprisal_top3", "random_top3"),
    ("oracle", "surprisal_top3"),
    ("resid_surprisal", "surprisal"),
    ("resid_surprisal", "random"),
    ("resid_confident", "random"),
    ("tail_confident", "random"),
    ("tail_confident", "most_confident"),
    ("shortest", "random"),
    ("longest", "random"),
    ("surprisal", "longest"),
)


def cohens_h(p1: float, p2: float) -> float:
    return 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p2))


def cohens_h_array(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    return 2 * np.arcsin(np.sqrt(np.clip(p1, 0, 1))) - 2 * np.arcsin(np.sqrt(np.clip(p2, 0, 1)))


def sign_test_one_sided(wins: int, losses: int) -> float:
    """P(at least `wins` of the discordant pairs favour a | no difference)."""
    n = wins + losses
    return float(stats.binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else math.nan


def mcnemar_exact(wins: int, losses: int) -> float:
    """Exact McNemar test: two-sided binomial test of the discordant pairs against 1/2."""
    n = wins + losses
    return float(stats.binomtest(wins, n, 0.5, alternative="two-sided").pvalue) if n else math.nan


def _unit_values(pol: pd.DataFrame, rule: str, variant: str) -> pd.DataFrame | None:
    g = pol[(pol["rule"] == rule) & (pol["variant"] == variant)]
    return None if g.empty else g.set_index(["seed", "task_id"]).sort_index()


def _variants_of(pol: pd.DataFrame, rule: str) -> set[str]:
    return set(pol.loc[pol["rule"] == rule, "variant"])


def paired_comparisons(per_unit: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every pair in COMPARISONS under every variant (once, as '-', when neither rule has variants)."""
    from vegtts.analysis.selection import NO_VARIANT, UnitMatrix, bootstrap_counts, percentile_ci

    rows = []
    rng = np.random.default_rng(seed)
    for policy, pol in per_unit.groupby("policy", sort=True):
        mat = UnitMatrix(pol)
        counts = bootstrap_counts(len(mat.task_order), n_boot, rng) if n_boot > 0 else None
        for a, b in COMPARISONS:
            va, vb = _variants_of(pol, a), _variants_of(pol, b)
            if not va or not vb:
                continue
            variants = [v for v in SURPRISAL_VARIANTS if v in va | vb] or [NO_VARIANT]
            for variant in variants:
                var_a = variant if variant in va else NO_VARIANT
                var_b = variant if variant in vb else NO_VARIANT
                ga, gb = _unit_values(pol, a, var_a), _unit_values(pol, b, var_b)
                if ga is None or gb is None:
                    continue
                sa, sb = ga["success"].to_numpy(float), gb["success"].to_numpy(float)
                # Random rules give probabilities: count a unit as discordant only on 0/1 outcomes.
                wins = int(((sa == 1) & (sb == 0)).sum())
                losses = int(((sa == 0) & (sb == 1)).sum())
                ratio = np.log(np.maximum(ga["selected_speedup"].to_numpy(float), ZERO_SPEEDUP)) - np.log(
                    np.maximum(gb["selected_speedup"].to_numpy(float), ZERO_SPEEDUP))
                w_stat = w_p = math.nan
                if np.any(ratio != 0):
                    res = stats.wilcoxon(ratio)
                    w_stat, w_p = float(res.statistic), float(res.pvalue)
                pa, pb = float(sa.mean()), float(sb.mean())
                log_ratio = float(ga["selected_log_speedup"].mean() - gb["selected_log_speedup"].mean())
                row = {
                    "policy": policy, "variant": variant, "rule_a": a, "rule_b": b, "n_units": len(sa),
                    "n_tasks": len(mat.task_order), "rate_a": pa, "rate_b": pb,
                    "diff": pa - pb, "diff_lo": math.nan, "diff_hi": math.nan,
                    "cohens_h": cohens_h(pa, pb), "h_lo": math.nan, "h_hi": math.nan,
                    "a_wins": wins, "b_wins": losses,
                    "sign_test_p_one_sided": sign_test_one_sided(wins, losses),
                    "mcnemar_exact_p": mcnemar_exact(wins, losses),
                    "geomean_ratio": math.exp(log_ratio), "geomean_ratio_lo": math.nan, "geomean_ratio_hi": math.nan,
                    "wilcoxon_w": w_stat, "wilcoxon_p_two_sided": w_p,
                    "median_speedup_ratio": float(np.exp(np.median(ratio))),
                }
                if counts is not None:
                    ca, cb = f"{a}|{var_a}", f"{b}|{var_b}"
                    ra, rb = mat.rate_draws(ca, counts), mat.rate_draws(cb, counts)
                    row["diff_lo"], row["diff_hi"] = percentile_ci(ra - rb)
                    row["h_lo"], row["h_hi"] = percentile_ci(cohens_h_array(ra, rb))
                    lr = mat.log_geomean_draws(ca, counts) - mat.log_geomean_draws(cb, counts)
                    row["geomean_ratio_lo"], row["geomean_ratio_hi"] = np.exp(percentile_ci(lr))
                rows.append(row)
    return pd.DataFrame(rows)


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Spearman correlation of x and y controlling for z: Pearson r of rank residuals; p from t(n-3)."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones_like(rz), rz])
    res_x = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    res_y = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    n = len(x)
    if n < 4 or res_x.std() == 0 or res_y.std() == 0:
        return math.nan, math.nan
    r = float(np.corrcoef(res_x, res_y)[0, 1])
    t = r * math.sqrt((n - 3) / max(1e-300, 1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 3))


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan, math.nan
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def surprisal_correlations(samples: pd.DataFrame) -> pd.DataFrame:
    """Per policy and variant, over correct samples with a finite NLL (pooled, and mean within-task rho)."""
    rows = []
    correct = samples[samples["correct"].astype(bool)]
    for policy, pol in correct.groupby("policy", sort=True):
        for variant in SURPRISAL_VARIANTS:
            g = pol[np.isfinite(pol[f"nll_{variant}"])]
            nll, sp = g[f"nll_{variant}"].to_numpy(float), g["speedup"].to_numpy(float)
            length = g["n_code_tokens" if variant.endswith("code") else "n_tokens"].to_numpy(float)
            rho, p = _spearman(nll, sp)
            prho, pp = partial_spearman(nll, sp, length) if len(g) >= 4 else (math.nan, math.nan)
            lrho, lp = _spearman(length, sp)
            within = [_spearman(t[f"nll_{variant}"].to_numpy(float), t["speedup"].to_numpy(float))[0]
                      for _, t in g.groupby(["seed", "task_id"])]
            within = [r for r in within if np.isfinite(r)]
            rows.append({
                "policy": policy, "variant": variant, "n_correct_samples": len(g),
                "spearman_nll_speedup": rho, "p": p,
                "partial_spearman_given_length": prho, "p_partial": pp,
                "spearman_length_speedup": lrho, "p_length": lp,
                "mean_within_unit_spearman": float(np.mean(within)) if within else math.nan,
                "n_units_with_rho": len(within),
            })
    return pd.DataFrame(rows)


QUARTILE_LABELS = ("Q1 (most confident)", "Q2", "Q3", "Q4 (most surprising)")
DEFAULT_SPREAD_THRESHOLD = 0.01  # nats per token


def _quartile_of_rank(values: np.ndarray, sample_idx: np.ndarray) -> np.ndarray:
    """Quartile 1..4 of each value by rank (ties by sample_idx), equal-count bins."""
    order = np.lexsort((sample_idx, values))
    ranks = np.empty(len(values), dtype=int)
    ranks[order] = np.arange(len(values))
    return 1 + (4 * ranks) // len(values)


def surprisal_quartiles(samples: pd.DataFrame) -> pd.DataFrame:
    """Fast_1 rate and speedup of correct samples per NLL quartile, per-task and global schemes."""
    rows = []
    correct = samples[samples["correct"].astype(bool)]
    for policy, pol in correct.groupby("policy", sort=True):
        for variant in SURPRISAL_VARIANTS:
            col = f"nll_{variant}"
            length_col = "n_code_tokens" if variant.endswith("code") else "n_tokens"
            g = pol[np.isfinite(pol[col].to_numpy(float))]
            schemes: dict[str, pd.Series] = {}
            if len(g) >= 4:
                schemes["global"] = pd.Series(
                    _quartile_of_rank(g[col].to_numpy(float), g["sample_idx"].to_numpy()), index=g.index)
            parts = [pd.Series(_quartile_of_rank(u[col].to_numpy(float), u["sample_idx"].to_numpy()), index=u.index)
                     for _, u in g.groupby(["seed", "task_id"]) if len(u) >= 4]
            if parts:
                schemes["per_task"] = pd.concat(parts)
            for scheme, q in schemes.items():
                sub = g.loc[q.index].assign(_q=q)
                for quartile in range(1, 5):
                    b = sub[sub["_q"] == quartile]
                    sp = b["speedup"].to_numpy(float)
                    rows.append({
                        "policy": policy, "variant": variant, "scheme": scheme, "quartile": quartile,
                        "label": QUARTILE_LABELS[quartile - 1], "n_samples": len(b),
                        "n_units": b.groupby(["seed", "task_id"]).ngroups,
                        "share_fast_1": float(b["fast_1"].mean()) if len(b) else math.nan,
                        "median_speedup": float(np.median(sp)) if len(b) else math.nan,
                        "geomean_speedup": float(np.exp(np.mean(np.log(np.maximum(sp, 1e-3))))) if len(b) else math.nan,
                        "mean_nll": float(b[col].mean()) if len(b) else math.nan,
                        "mean_length": float(b[length_col].mean()) if len(b) else math.nan,
                    })
    return pd.DataFrame(rows)


def logprob_spread(samples: pd.DataFrame, threshold: float = DEFAULT_SPREAD_THRESHOLD) -> pd.DataFrame:
    """Per unit and variant: how far apart the correct samples' NLLs are, and whether a rule can matter."""
    rows = []
    correct = samples[samples["correct"].astype(bool)]
    for (policy, seed, task), u in correct.groupby(["policy", "seed", "task_id"], sort=True):
        fast = u["fast_1"].to_numpy(bool)
        mixed = bool(fast.any() and not fast.all())
        for variant in SURPRISAL_VARIANTS:
            nll = u[f"nll_{variant}"].to_numpy(float)
            nll = nll[np.isfinite(nll)]
            length_col = "n_code_tokens" if variant.endswith("code") else "n_tokens"
            mean_len = float(u[length_col].mean())
            thr = threshold if variant.startswith("mean") else threshold * mean_len
            rng_ = float(nll.max() - nll.min()) if nll.size else math.nan
            iqr = float(np.subtract(*np.percentile(nll, [75, 25]))) if nll.size else math.nan
            spread_ok = bool(nll.size >= 2 and rng_ >= thr)
            rows.append({
                "policy": policy, "seed": seed, "task_id": task, "variant": variant, "n_correct": len(u),
                "nll_range": rng_, "nll_iqr": iqr, "threshold": thr, "spread_ok": spread_ok,
                "outcome_mixed": mixed, "rules_can_matter": spread_ok and mixed,
            })
    return pd.DataFrame(rows)
