"""Paired rule comparisons and surprisal-speedup correlations (the paper's §5.2 statistics).

Comparisons pair units (every rule sees the same samples): Cohen's h from the pooled rates,
an exact one-sided sign test on discordant units, and a two-sided Wilcoxon signed-rank test on
log(speedup_a / speedup_b) with speedup 0 replaced by 1e-6, as in the paper.  Correlations are
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
COMPARISONS = (("surprisal", "most_confident"), ("surprisal_top3", "surprisal"))


def cohens_h(p1: float, p2: float) -> float:
    return 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p2))


def sign_test_one_sided(wins: int, losses: int) -> float:
    """P(at least `wins` of the discordant pairs favour a | no difference)."""
    n = wins + losses
    return float(stats.binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else math.nan


def paired_comparisons(per_unit: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for policy, pol in per_unit.groupby("policy", sort=True):
        for variant in SURPRISAL_VARIANTS:
            for a, b in COMPARISONS:
                ga = pol[(pol["rule"] == a) & (pol["variant"] == variant)].set_index(["seed", "task_id"]).sort_index()
                gb = pol[(pol["rule"] == b) & (pol["variant"] == variant)].set_index(["seed", "task_id"]).sort_index()
                if ga.empty or gb.empty:
                    continue
                sa, sb = ga["success"].to_numpy(), gb["success"].to_numpy()
                wins, losses = int(((sa == 1) & (sb == 0)).sum()), int(((sa == 0) & (sb == 1)).sum())
                ratio = np.log(np.maximum(ga["selected_speedup"].to_numpy(), ZERO_SPEEDUP)) - np.log(
                    np.maximum(gb["selected_speedup"].to_numpy(), ZERO_SPEEDUP))
                w_stat = w_p = math.nan
                if np.any(ratio != 0):
                    res = stats.wilcoxon(ratio)
                    w_stat, w_p = float(res.statistic), float(res.pvalue)
                pa, pb = float(sa.mean()), float(sb.mean())
                rows.append({
                    "policy": policy, "variant": variant, "rule_a": a, "rule_b": b, "n_units": len(sa),
                    "rate_a": pa, "rate_b": pb, "cohens_h": cohens_h(pa, pb),
                    "a_wins": wins, "b_wins": losses, "sign_test_p_one_sided": sign_test_one_sided(wins, losses),
                    "wilcoxon_w": w_stat, "wilcoxon_p_two_sided": w_p,
                    "median_speedup_ratio": float(np.exp(np.median(ratio))),
                })
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
