"""Extended rules (deployable cost, length residuals, tail confidence) vs brute force; statistics,
bootstrap coverage by simulation; quartile, spread, saturation and equivalent-k tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from vegtts.analysis.rules import RULES, RankBy
from vegtts.analysis.rules.base import expected_position_of_jth_success, residualise, unit_keys
from vegtts.analysis.run import equivalent_k_table, saturation_table, unit_curves
from vegtts.analysis.selection import (
    aggregate_selection,
    bootstrap_weights,
    select_all,
    select_unit,
    weighted_ratio_draws,
)
from vegtts.analysis.statistics import (
    cohens_h,
    logprob_spread,
    mcnemar_exact,
    paired_comparisons,
    surprisal_quartiles,
)
from vegtts.analysis.surprisal import lowest_tail, surprisal_from_logprobs

RANKING_RULES = [rule for rule in RULES if isinstance(rule.select, RankBy)]


def random_unit(rng: np.random.Generator, n: int, task: str = "t", seed: int = 0) -> pd.DataFrame:
    """A unit with ties in NLL and length, samples without code and random correctness."""
    has_code = rng.random(n) > 0.15
    correct = has_code & (rng.random(n) < rng.uniform(0.2, 0.9))
    speedup = np.where(correct, np.round(rng.uniform(0.5, 2.0, n), 1), 0.0)
    df = pd.DataFrame({
        "sample_idx": rng.permutation(n), "correct": correct, "speedup": speedup, "has_code": has_code,
        "n_code_tokens": np.where(has_code, rng.integers(3, 8, n), 0),
        "n_tokens": rng.integers(8, 14, n),
    })
    for v in ("mean_code", "sum_code", "mean_all", "sum_all"):
        df[f"nll_{v}"] = np.round(rng.uniform(0, 2, n), 1)
        df[f"tail_nll_{v}"] = np.round(rng.uniform(1, 4, n), 1)
    df["fast_1"] = df["correct"] & (df["speedup"] > 1)
    df["task_id"], df["policy"], df["seed"] = task, "base", seed
    df["code_sha256"] = [f"{task}-{seed}-{i}" for i in df["sample_idx"]]  # every sample a distinct program
    return df


def brute_deploy(df: pd.DataFrame, key: np.ndarray, descending: bool, top: int) -> tuple[int, float, int]:
    """Check samples one by one in rank order; stop at the top-th correct; time those, take the fastest."""
    items = list(zip(key, df["sample_idx"], df["correct"], df["speedup"]))
    # NaN keys last, then key (descending flips the sign), then smallest sample_idx.
    items.sort(key=lambda it: (math.isnan(it[0]), 0.0 if math.isnan(it[0]) else (-it[0] if descending else it[0]), it[1]))
    found, spent = [], 0
    for _key, idx, ok, sp in items:
        spent += 1
        if ok:
            found.append((idx, sp))
            if len(found) == top:
                break
    if not found:
        return -1, 0.0, len(items)
    best = sorted(found, key=lambda f: (-f[1], f[0]))[0]
    return int(best[0]), float(best[1]), spent if len(found) == top else len(items)


def test_deployable_rules_match_sequential_checking_on_random_units():
    rng = np.random.default_rng(11)
    for trial in range(150):
        df = random_unit(rng, int(rng.integers(1, 10)))
        got = {(s.rule, s.variant): s for s in select_unit(df)}
        for v in ("mean_code", "sum_all"):
            keys = unit_keys(df, v)
            for rule in RANKING_RULES:
                variant = v if rule.per_variant else "-"
                s = got[(rule.name, variant)]
                idx, sp, spent = brute_deploy(df, keys[rule.select.key], rule.select.descending, rule.select.top)
                assert (s.selected_sample_idx, s.selected_speedup, s.n_evaluated) == (idx, sp, spent), (trial, rule)


def test_random_rule_costs_equal_average_over_all_orders():
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(1, 7))
        correct = rng.random(n) < 0.5
        c = int(correct.sum())
        if c == 0:
            continue
        for j in range(1, c + 1):
            positions = []
            for perm in itertools.permutations(range(n)):
                hits = [i for i, p in enumerate(perm) if correct[p]]
                positions.append(hits[j - 1] + 1)
            assert expected_position_of_jth_success(n, c, j) == pytest.approx(np.mean(positions))


def test_oracle_and_random_costs_in_a_unit():
    df = random_unit(np.random.default_rng(5), 9)
    df.loc[:, "correct"] = [True, False, True, False, False, True, True, False, False]
    df["has_code"] = True
    df["fast_1"] = df["correct"] & (df["speedup"] > 1)
    got = {(s.rule, s.variant): s for s in select_unit(df)}
    assert got[("oracle", "-")].n_evaluated == 9 and got[("oracle", "-")].n_timed == 4
    assert got[("random", "-")].n_evaluated == pytest.approx(10 / 5)
    assert got[("random_top3", "-")].n_evaluated == pytest.approx(3 * 10 / 5)


def test_residualise_removes_a_linear_length_effect():
    length = np.array([10, 20, 30, 40, 50.0])
    nll = 0.5 + 0.1 * length + np.array([0.3, -0.1, 0.0, -0.4, 0.2])
    res = residualise(nll, length)
    fitted = nll - res
    assert np.allclose(np.polyfit(length, res, 1)[0], 0, atol=1e-12)
    assert np.allclose(np.diff(fitted, 2), 0, atol=1e-12)  # the fit is linear in length
    assert np.allclose(residualise(np.array([1.0, 2.0, np.nan]), np.array([5, 5, 5.0]))[:2], [-0.5, 0.5])
    assert np.isnan(residualise(np.array([1.0, 2.0, np.nan]), np.array([5, 5, 5.0]))[2])


def test_resid_rule_ignores_nll_that_is_only_length():
    """When NLL = f(length) + small signal, raw surprisal picks the longest, resid_surprisal the signal."""
    df = random_unit(np.random.default_rng(0), 6)
    df["correct"], df["has_code"] = True, True
    df["n_code_tokens"] = [10, 20, 30, 40, 50, 60]
    df["nll_sum_code"] = 0.5 * df["n_code_tokens"] + np.array([0, 0, 2.0, 0, 0, 0])
    df["fast_1"] = df["speedup"] > 1
    got = {(s.rule, s.variant): s for s in select_unit(df)}
    assert got[("surprisal", "sum_code")].selected_sample_idx == df["sample_idx"].iloc[5]
    assert got[("resid_surprisal", "sum_code")].selected_sample_idx == df["sample_idx"].iloc[2]


def test_tail_confidence_is_the_lowest_ten_percent():
    lp = np.array([-0.1] * 18 + [-5.0, -3.0])
    assert list(lowest_tail(lp)) == [-5.0, -3.0]
    assert list(lowest_tail(np.array([-1.0, -2.0, -0.5]))) == [-2.0]  # at least one token
    s = surprisal_from_logprobs(list(lp) + [-9.0], 0, 20)
    assert s.tail_nll_mean_code == pytest.approx(4.0) and s.tail_nll_sum_code == pytest.approx(8.0)
    assert s.tail_nll_mean_all == pytest.approx((9 + 5 + 3) / 3)  # ceil(0.1 * 21) = 3 tokens
    assert math.isnan(surprisal_from_logprobs([-1.0], 1, 1).tail_nll_mean_code)


# ---------------------------------------------------------------- statistics

def _units(n_tasks: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.concat([random_unit(rng, 8, task=f"t{i}") for i in range(n_tasks)], ignore_index=True)


def test_comparisons_intervals_contain_the_estimates_and_tests_match_scipy():
    per_unit = select_all(_units(15))
    comp = paired_comparisons(per_unit, n_boot=400, seed=1)
    assert {"diff_lo", "h_lo", "geomean_ratio_lo", "mcnemar_exact_p"} <= set(comp.columns)
    for _, r in comp.iterrows():
        assert r["diff"] == pytest.approx(r["rate_a"] - r["rate_b"])
        assert r["cohens_h"] == pytest.approx(cohens_h(r["rate_a"], r["rate_b"]))
        assert r["diff_lo"] - 1e-12 <= r["diff"] <= r["diff_hi"] + 1e-12
        assert r["h_lo"] - 1e-9 <= r["cohens_h"] <= r["h_hi"] + 1e-9
        if np.isfinite(r["mcnemar_exact_p"]):  # both rules pick one sample, one unit per task
            assert r["mcnemar_exact_p"] == pytest.approx(mcnemar_exact(int(r["tasks_a_better"]), int(r["tasks_b_better"])))
        if "random" in (r["rule_a"], r["rule_b"]):
            assert math.isnan(r["mcnemar_exact_p"])  # a random rule's success is a probability
    # neither-variant pairs appear once, with variant '-'
    assert len(comp[(comp.rule_a == "shortest") & (comp.rule_b == "random")]) == 1
    assert mcnemar_exact(3, 0) == pytest.approx(0.25)


def test_selection_geomean_interval_brackets_the_estimate():
    agg = aggregate_selection(select_all(_units(12, seed=2)), n_boot=300, seed=0)
    ok = agg["geomean_lo"].notna()
    assert ok.all()
    assert ((agg["geomean_lo"] <= agg["geomean_speedup"] * (1 + 1e-9)) &
            (agg["geomean_speedup"] <= agg["geomean_hi"] * (1 + 1e-9))).all()
    assert (agg["mean_n_evaluated"] <= agg["mean_n_samples"] + 1e-12).all()


def test_cluster_bootstrap_covers_the_truth_at_about_the_nominal_rate():
    """Simulation: tasks with heterogeneous success probabilities, 2 seeds each; 95% intervals of the
    unit-mean success should contain the true mean about 95% of the time (percentile bootstrap is a
    bit optimistic at small n, hence the band)."""
    rng = np.random.default_rng(2024)
    n_tasks, n_seeds, reps, n_boot = 40, 2, 300, 400
    hits = 0
    for _ in range(reps):
        p = rng.beta(0.7, 0.7, n_tasks)  # true per-task success probability
        truth = 0.7 / 1.4  # mean of Beta(0.7, 0.7): the population the tasks are drawn from
        outcomes = rng.random((n_tasks, n_seeds)) < p[:, None]
        draws = weighted_ratio_draws(bootstrap_weights(n_tasks, n_boot, rng), outcomes.sum(axis=1).astype(float),
                                     np.full(n_tasks, float(n_seeds)), (0.0, 1.0))
        lo, hi = np.percentile(draws, [2.5, 97.5])
        hits += lo <= truth <= hi
    coverage = hits / reps
    assert 0.89 <= coverage <= 0.99, coverage


def test_quartiles_partition_correct_samples():
    samples = _units(10, seed=4)
    q = surprisal_quartiles(samples)
    n_correct = int(samples["correct"].sum())
    g = q[(q.variant == "mean_code") & (q.scheme == "global")]
    assert list(g["quartile"]) == [1, 2, 3, 4] and g["n_samples"].sum() == n_correct
    assert g["n_programs"].sum() == n_correct  # random_unit: every sample its own program
    assert list(g["label"])[0].startswith("Q1 (most confident)")
    assert (np.diff(g["mean_nll"]) >= 0).all()
    per_task = q[(q.variant == "mean_code") & (q.scheme == "per_task")]
    eligible = samples[samples.correct].groupby("task_id").size()
    assert per_task["n_samples"].sum() == eligible[eligible >= 4].sum()


def test_spread_marks_units_where_no_rule_can_matter():
    samples = _units(3, seed=6)
    samples.loc[samples.task_id == "t0", "nll_mean_code"] = 1.0  # no spread at all
    spread = logprob_spread(samples, threshold=0.01).set_index(["task_id", "variant"])
    assert not spread.loc[("t0", "mean_code"), "spread_ok"]
    assert not spread.loc[("t0", "mean_code"), "rules_can_matter"]
    assert spread.loc[("t0", "sum_code"), "threshold"] == pytest.approx(
        0.01 * samples[(samples.task_id == "t0") & samples.correct]["n_code_tokens"].mean())
    for (task, _), r in spread.iterrows():
        fast = samples[(samples.task_id == task) & samples.correct]["fast_1"]
        assert r["outcome_mixed"] == (fast.any() and not fast.all())


def test_saturation_and_equivalent_k():
    samples = _units(6, seed=8)
    curves = unit_curves(samples, [0, 1])
    sat = saturation_table(curves).set_index(["metric", "p"])
    fast1 = curves["base"][("fast_p@k", 1.0)]
    k_sat = int(sat.loc[("fast_p@k", 1.0), "saturation_k"])
    assert fast1[k_sat - 1] >= fast1[-1] - 0.02 - 1e-12
    assert k_sat == 1 or fast1[k_sat - 2] < fast1[-1] - 0.02
    agg = aggregate_selection(select_all(samples), n_boot=0)
    eq = equivalent_k_table(agg, curves)
    oracle = eq[(eq.rule == "oracle") & (eq.measure == "task_success")].iloc[0]
    assert oracle["rule_value"] == pytest.approx(fast1[-1])  # the oracle at K is Best-of-K
    for _, r in eq[eq.measure == "task_success"].iterrows():
        k = r["k_matched"]
        if r["at_ceiling"]:  # only a bound: where the curve first comes within 0.01 of its ceiling
            assert r["k_matched_text"] == f"at least {int(k)}" and fast1[int(k) - 1] >= fast1[-1] - 0.01 - 1e-12
            assert k == 1 or fast1[int(k) - 2] < fast1[-1] - 0.01
            continue
        if np.isfinite(k):
            assert fast1[int(k) - 1] >= r["rule_value"] - 1e-9
            assert k == 1 or fast1[int(k) - 2] < r["rule_value"] - 1e-9
