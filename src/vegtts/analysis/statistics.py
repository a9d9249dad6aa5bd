"""Paired rule comparisons and surprisal-speedup correlations, with the unit of evidence explicit.

Rule comparisons: units (policy, seed, task) are paired (every rule sees the same samples); the
intervals are paired task-clustered bootstraps of the task-success difference, of Cohen's h and of
the geometric-mean speedup ratio.  A comparison's verdict is "a better" or "b better" only when its
interval excludes the null (0 for differences, 1 for ratios), else "tie".  Tests run over *tasks*
(per-task means over seeds), never over samples: the exact sign and McNemar tests only where both
rules pick one sample and every task has one unit; the two-sided Wilcoxon signed-rank test on the
per-task difference of E[log speedup], the quantity the geometric-mean ratio is built from.

Correlations run over distinct correct programs (copies of one program share one timing: counting
them would count one measurement many times), with task-clustered bootstrap intervals.  No p-value
that assumes independent observations is printed: programs of one task are not independent.  The
one p-value given, for the within-task association, comes from permuting speedups within tasks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from vegtts.analysis.constants import SURPRISAL_VARIANTS
from vegtts.analysis.programs import distinct_programs

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
TIE, A_BETTER, B_BETTER = "tie", "a better", "b better"
PERMUTATIONS = 2000


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


EXACT_WILCOXON_MAX_N = 16


def wilcoxon_signed_rank(d: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences: (W+, p).

    Zero differences are dropped (Wilcox), ties get mid-ranks; p is exact over all 2^n sign flips
    for n <= EXACT_WILCOXON_MAX_N (the same null as scipy's permutation version, computed directly),
    else the normal approximation with the tie correction.  NaN when no nonzero difference is left."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d != 0)]
    n = d.size
    if n == 0:
        return math.nan, math.nan
    ranks = stats.rankdata(np.abs(d))
    w = float(ranks[d > 0].sum())
    centre = ranks.sum() / 2
    if n <= EXACT_WILCOXON_MAX_N:
        signs = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        null = signs @ ranks
        p = float(np.mean(np.abs(null - centre) >= abs(w - centre) - 1e-9))
        return w, min(1.0, p)
    var = (ranks ** 2).sum() / 4
    z = (w - centre) / math.sqrt(var)
    return w, float(min(1.0, 2 * stats.norm.sf(abs(z))))


def interval_verdict(lo: float, hi: float, null: float) -> str:
    """"a better" / "b better" only when the interval excludes `null`; "tie" when it contains it."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    if lo > null:
        return A_BETTER
    if hi < null:
        return B_BETTER
    return TIE


def _per_task_means(pol: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """"rule|variant" -> per-task means over seeds of success and selected_log_speedup."""
    g = pol.groupby(["rule", "variant", "task_id"], sort=True)[["success", "selected_log_speedup"]].mean()
    return {f"{rule}|{variant}": d.droplevel([0, 1]) for (rule, variant), d in g.groupby(level=[0, 1])}


def _pairs_for(pol: pd.DataFrame, planned_pairs: Sequence[tuple[str, str]],
               primary_variant: str | None) -> list[tuple[str, str, str | None]]:
    """(rule_a, rule_b, only this variant or None for every variant): the planned pairs under
    every variant, then every other pair of rules under the primary variant."""
    from vegtts.analysis.selection import NO_VARIANT, RULE_ORDER

    pairs: list[tuple[str, str, str | None]] = [(a, b, None) for a, b in planned_pairs]
    if primary_variant:
        present = set(pol.loc[pol["variant"].isin([primary_variant, NO_VARIANT]), "rule"])
        rules = [r for r in RULE_ORDER if r in present]
        planned = {frozenset(p) for p in planned_pairs}
        pairs += [(a, b, primary_variant) for a, b in itertools.combinations(rules, 2) if frozenset((a, b)) not in planned]
    return pairs


def paired_comparisons(per_unit: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                       primary_variant: str | None = None,
                       pairs: Sequence[tuple[str, str]] = COMPARISONS) -> pd.DataFrame:
    """The planned pairs (COMPARISONS) under every variant (once, as '-', when neither rule has
    variants; column scope = planned), and with `primary_variant` every other pair of rules under
    that variant (scope = all_pairs), so that a report can name the rules no other rule beats."""
    from vegtts.analysis.selection import (
        NO_VARIANT,
        UnitMatrix,
        bootstrap_weights,
        interval_including,
    )

    rows = []
    rng = np.random.default_rng(seed)
    for policy, pol in per_unit.groupby("policy", sort=True):
        mat = UnitMatrix(pol)
        weights = bootstrap_weights(len(mat.task_order), n_boot, rng) if n_boot > 0 else None
        one_unit_per_task = bool((mat.units_per_task == 1).all())
        expected = dict(zip(pol["rule"], pol["expected"])) if "expected" in pol else {}
        per_task = _per_task_means(pol)
        solvable = pol.groupby("task_id")["n_correct"].max() > 0
        variants_of = {r: set(v) for r, v in pol.groupby("rule")["variant"]}
        success = {c: mat.success[c].to_numpy(float) for c in mat.success.columns}
        log_speedup = {c: mat.log_speedup[c].to_numpy(float) for c in mat.log_speedup.columns}
        solv_units = mat.solvable.astype(bool)
        for a, b, only in _pairs_for(pol, pairs, primary_variant):
            va, vb = variants_of.get(a, set()), variants_of.get(b, set())
            if not va or not vb:
                continue
            variants = [only] if only else ([v for v in SURPRISAL_VARIANTS if v in va | vb] or [NO_VARIANT])
            for variant in variants:
                var_a = variant if variant in va else NO_VARIANT
                var_b = variant if variant in vb else NO_VARIANT
                if var_a not in va or var_b not in vb:
                    continue
                ta, tb = per_task[f"{a}|{var_a}"], per_task[f"{b}|{var_b}"]
                sa, sb = ta["success"], tb["success"]
                la, lb = ta["selected_log_speedup"], tb["selected_log_speedup"]
                deterministic = one_unit_per_task and not expected.get(a, False) and not expected.get(b, False)
                wins = int(((sa == 1) & (sb == 0)).sum())
                losses = int(((sa == 0) & (sb == 1)).sum())
                log_diff = (la - lb).to_numpy(float)
                w_stat, w_p = wilcoxon_signed_rank(log_diff)
                ca, cb = f"{a}|{var_a}", f"{b}|{var_b}"
                pa, pb = float(success[ca].mean()), float(success[cb].mean())
                log_ratio = float(log_speedup[ca].mean() - log_speedup[cb].mean())
                log_ratio_solv = (float(log_speedup[ca][solv_units].mean() - log_speedup[cb][solv_units].mean())
                                  if solv_units.any() else math.nan)
                row = {
                    "policy": policy, "variant": variant, "scope": "all_pairs" if only else "planned",
                    "rule_a": a, "rule_b": b, "n_units": len(mat.success), "n_tasks": len(mat.task_order),
                    "n_tasks_solvable": int(solvable.sum()),
                    "rate_a": pa, "rate_b": pb, "diff": pa - pb, "diff_lo": math.nan, "diff_hi": math.nan,
                    "task_success_verdict": "",
                    "cohens_h": cohens_h(pa, pb), "h_lo": math.nan, "h_hi": math.nan,
                    "tasks_a_better": int((sa > sb).sum()), "tasks_b_better": int((sa < sb).sum()),
                    "sign_test_p_one_sided": sign_test_one_sided(wins, losses) if deterministic else math.nan,
                    "mcnemar_exact_p": mcnemar_exact(wins, losses) if deterministic else math.nan,
                    "geomean_ratio": math.exp(log_ratio), "geomean_ratio_lo": math.nan, "geomean_ratio_hi": math.nan,
                    "geomean_ratio_solvable": math.exp(log_ratio_solv) if np.isfinite(log_ratio_solv) else math.nan,
                    "geomean_ratio_solvable_lo": math.nan, "geomean_ratio_solvable_hi": math.nan,
                    "speedup_verdict": "",
                    "wilcoxon_w": w_stat, "wilcoxon_p_two_sided": w_p,
                    "median_speedup_ratio": float(np.exp(np.median(log_diff))) if log_diff.size else math.nan,
                }
                if weights is not None:
                    ra, rb = mat.rate_diff_draws(ca, cb, weights)
                    row["diff_lo"], row["diff_hi"] = interval_including(ra - rb, row["diff"])
                    row["h_lo"], row["h_hi"] = interval_including(cohens_h_array(ra, rb), row["cohens_h"])
                    lr = mat.log_ratio_draws(ca, cb, weights)
                    row["geomean_ratio_lo"], row["geomean_ratio_hi"] = np.exp(interval_including(lr, log_ratio))
                    lrs = mat.log_ratio_draws(ca, cb, weights, solvable_only=True)
                    row["geomean_ratio_solvable_lo"], row["geomean_ratio_solvable_hi"] = np.exp(
                        interval_including(lrs, log_ratio_solv))
                    row["task_success_verdict"] = interval_verdict(row["diff_lo"], row["diff_hi"], 0.0)
                    row["speedup_verdict"] = interval_verdict(row["geomean_ratio_solvable_lo"],
                                                              row["geomean_ratio_solvable_hi"], 1.0)
                rows.append(row)
    return pd.DataFrame(rows)


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties at their mean rank (scipy.stats.rankdata's 'average', without its overhead)."""
    x = np.asarray(x, float)
    n = x.size
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.concatenate(([0], np.flatnonzero(xs[1:] != xs[:-1]) + 1))
    ends = np.concatenate((starts[1:], [n]))
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _residual(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """y minus its least-squares line in z."""
    zc = z - z.mean()
    denom = float(zc @ zc)
    slope = float(zc @ (y - y.mean())) / denom if denom > 0 else 0.0
    return y - y.mean() - slope * zc


def partial_spearman_r(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman correlation of x and y controlling for z: Pearson r of the rank residuals after
    regressing each rank on z's rank; NaN for n < 4 or a constant residual."""
    n = len(x)
    if n < 4:
        return math.nan
    rx, ry, rz = (midranks(v) for v in (x, y, z))
    res_x, res_y = _residual(rx, rz), _residual(ry, rz)
    sx, sy = float(res_x @ res_x), float(res_y @ res_y)
    if sx < 1e-18 * n or sy < 1e-18 * n:
        return math.nan
    return float(np.clip((res_x @ res_y) / math.sqrt(sx * sy), -1.0, 1.0))


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """partial_spearman_r and its p from t(n-3) (valid for independent observations only: the
    analysis tables use task-clustered intervals instead)."""
    r = partial_spearman_r(x, y, z)
    if not np.isfinite(r):
        return math.nan, math.nan
    n = len(x)
    t = r * math.sqrt((n - 3) / max(1e-300, 1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 3))


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with mid-ranks; NaN when n < 3 or a side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    rx, ry = midranks(x), midranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx @ ry) / math.sqrt(float(rx @ rx) * float(ry @ ry)))


def _task_bootstrap(groups: list[np.ndarray], stat, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of stat(rows of the drawn tasks), tasks resampled with replacement."""
    if n_boot <= 0 or len(groups) < 2:
        return math.nan, math.nan
    from vegtts.analysis.selection import percentile_ci

    draws = np.empty(n_boot)
    for i in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        draws[i] = stat(np.concatenate([groups[j] for j in pick]))
    return percentile_ci(draws)


def task_rhos(x: np.ndarray, y: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Spearman rho within each task (np.unique order; NaN where undefined)."""
    return np.array([spearman_rho(x[task == t], y[task == t]) for t in np.unique(task)])


def within_task_rho(x: np.ndarray, y: np.ndarray, task: np.ndarray) -> tuple[float, int]:
    """Mean over tasks of the within-task Spearman rho (tasks where it is defined), and their count."""
    rhos = task_rhos(x, y, task)
    rhos = rhos[np.isfinite(rhos)]
    return (float(np.mean(rhos)) if rhos.size else math.nan), int(rhos.size)


def stratified_permutation_p(x: np.ndarray, y: np.ndarray, task: np.ndarray, n_perm: int,
                             rng: np.random.Generator) -> float:
    """Two-sided p of the mean within-task rho against permutations of y within each task
    (valid without independence across programs of a task: it needs only exchangeability within a
    task under no association); (1 + #as extreme) / (1 + n_perm)."""
    observed, n = within_task_rho(x, y, task)
    if n == 0 or n_perm <= 0:
        return math.nan
    total = np.zeros(n_perm)
    for t in np.unique(task):
        xt, yt = x[task == t], y[task == t]
        if not np.isfinite(spearman_rho(xt, yt)):
            continue  # permuting y keeps a task's rho undefined or defined: the same tasks count
        rx = midranks(xt) - (len(xt) + 1) / 2
        ry = midranks(yt) - (len(yt) + 1) / 2
        perms = rng.permuted(np.tile(ry, (n_perm, 1)), axis=1)
        total += (perms @ rx) / (np.linalg.norm(rx) * np.linalg.norm(ry))
    hits = int((np.abs(total / n) >= abs(observed) - 1e-12).sum())
    return (1 + hits) / (1 + n_perm)


def clustered_correlations(x: np.ndarray, y: np.ndarray, z: np.ndarray, task: np.ndarray, n_boot: int,
                           rng: np.random.Generator, n_perm: int = PERMUTATIONS) -> dict[str, float]:
    """rho(x, y), partial rho(x, y | z), rho(z, y) pooled over rows, and the mean within-task rho,
    each with a task-clustered bootstrap 95% interval; the within-task permutation p."""
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    task = np.asarray(task)
    groups = [np.flatnonzero(task == t) for t in np.unique(task)]
    out: dict[str, float] = {}
    stats_ = {
        "spearman_nll_speedup": lambda i: spearman_rho(x[i], y[i]),
        "partial_spearman_given_length": lambda i: partial_spearman_r(x[i], y[i], z[i]),
        "spearman_length_speedup": lambda i: spearman_rho(z[i], y[i]),
    }
    everything = np.arange(len(x))
    for name, fn in stats_.items():
        out[name] = fn(everything)
        out[f"{name}_lo"], out[f"{name}_hi"] = _task_bootstrap(groups, fn, n_boot, rng)
    rhos = task_rhos(x, y, task)  # a task drawn twice counts twice; its rho does not change
    out["mean_within_task_spearman"] = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else math.nan
    out["mean_within_task_spearman_lo"] = out["mean_within_task_spearman_hi"] = math.nan
    if n_boot > 0 and len(groups) >= 2 and np.isfinite(rhos).any():
        from vegtts.analysis.selection import bootstrap_counts, percentile_ci

        counts = bootstrap_counts(len(groups), n_boot, rng)
        ok = np.isfinite(rhos)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws = (counts[:, ok] @ rhos[ok]) / counts[:, ok].sum(axis=1)
        out["mean_within_task_spearman_lo"], out["mean_within_task_spearman_hi"] = percentile_ci(draws)
    out["n_tasks_with_within_rho"] = within_task_rho(x, y, task)[1]
    out["p_within_task_permutation"] = stratified_permutation_p(x, y, task, n_perm, rng) if n_perm else math.nan
    return out


def surprisal_correlations(samples: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                           n_perm: int = PERMUTATIONS) -> pd.DataFrame:
    """Per policy and variant, over distinct correct programs with a finite NLL (copies of one
    program averaged, see analysis.programs): pooled and within-task Spearman rho with
    task-clustered intervals; the sample-level rho only for reference (copies counted, no p)."""
    rows = []
    rng = np.random.default_rng(seed)
    correct = samples[samples["correct"].astype(bool)]
    values = [f"nll_{v}" for v in SURPRISAL_VARIANTS] + ["n_code_tokens", "n_tokens"]
    for policy, pol in correct.groupby("policy", sort=True):
        programs = distinct_programs(pol, values)
        for variant in SURPRISAL_VARIANTS:
            col = f"nll_{variant}"
            length_col = "n_code_tokens" if variant.endswith("code") else "n_tokens"
            g = programs[np.isfinite(programs[col].to_numpy(float))]
            sample_rows = pol[np.isfinite(pol[col].to_numpy(float))]
            corr = clustered_correlations(g[col].to_numpy(float), g["speedup"].to_numpy(float),
                                          g[length_col].to_numpy(float), g["task_id"].to_numpy(), n_boot, rng, n_perm)
            rows.append({
                "policy": policy, "variant": variant, "unit": "distinct correct programs",
                "n_samples": len(sample_rows), "n_programs": len(g), "n_tasks": int(g["task_id"].nunique()),
                **corr,
                "spearman_over_samples": spearman_rho(sample_rows[col].to_numpy(float),
                                                      sample_rows["speedup"].to_numpy(float)),
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
    """Fast_1 rate and speedup of distinct correct programs per NLL quartile, per-task and global
    schemes (copies of a program are one program: n_programs per bin, n_samples for reference)."""
    rows = []
    correct = samples[samples["correct"].astype(bool)]
    values = [f"nll_{v}" for v in SURPRISAL_VARIANTS] + ["n_code_tokens", "n_tokens"]
    for policy, pol in correct.groupby("policy", sort=True):
        programs = distinct_programs(pol, values)
        programs["_tie"] = np.arange(len(programs))  # ties by code_sha256 (the frame is sorted by it)
        for variant in SURPRISAL_VARIANTS:
            col = f"nll_{variant}"
            length_col = "n_code_tokens" if variant.endswith("code") else "n_tokens"
            g = programs[np.isfinite(programs[col].to_numpy(float))]
            schemes: dict[str, pd.Series] = {}
            if len(g) >= 4:
                schemes["global"] = pd.Series(_quartile_of_rank(g[col].to_numpy(float), g["_tie"].to_numpy()),
                                              index=g.index)
            parts = [pd.Series(_quartile_of_rank(u[col].to_numpy(float), u["_tie"].to_numpy()), index=u.index)
                     for _, u in g.groupby("task_id") if len(u) >= 4]
            if parts:
                schemes["per_task"] = pd.concat(parts)
            for scheme, q in schemes.items():
                sub = g.loc[q.index].assign(_q=q)
                for quartile in range(1, 5):
                    b = sub[sub["_q"] == quartile]
                    sp = b["speedup"].to_numpy(float)
                    rows.append({
                        "policy": policy, "variant": variant, "scheme": scheme, "quartile": quartile,
                        "label": QUARTILE_LABELS[quartile - 1], "unit": "distinct correct programs",
                        "n_programs": len(b), "n_samples": int(b["n_copies"].sum()),
                        "n_tasks": int(b["task_id"].nunique()),
                        "share_fast_1": float(b["fast_1"].astype(bool).mean()) if len(b) else math.nan,
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
                "n_correct_programs": int(u["code_sha256"].nunique()) if "code_sha256" in u else len(u),
                "nll_range": rng_, "nll_iqr": iqr, "threshold": thr, "spread_ok": spread_ok,
                "outcome_mixed": mixed, "rules_can_matter": spread_ok and mixed,
            })
    return pd.DataFrame(rows)
