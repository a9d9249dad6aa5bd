"""Analysis: estimators vs brute force, selection rules on hand-built data, tables, end to end."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vegtts.analysis import (
    expected_best_speedup_at_k,
    fast_p_at_k,
    k_grid,
    merge_samples_and_evaluations,
    read_table,
    run_analysis,
    select_unit,
    surprisal_from_logprobs,
    write_table,
)
from vegtts.analysis.constants import GEOMEAN_EPS
from vegtts.analysis.estimators import order_statistic_weights
from vegtts.analysis.selection import aggregate_selection, select_all
from vegtts.analysis.synthetic import synthetic_records, write_synthetic_run
from vegtts.outputs import ANALYSIS_TABLES

# ---------------------------------------------------------------- estimators vs brute force

def brute_fast_at_k(successes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(successes)), k))
    return sum(any(successes[i] for i in s) for s in subsets) / len(subsets)


def brute_expected_max(values: list[float], k: int) -> float:
    subsets = list(itertools.combinations(values, k))
    return sum(max(s) for s in subsets) / len(subsets)


def test_fast_p_at_k_matches_enumeration_on_random_cases():
    rng = random.Random(1)
    for _ in range(300):
        n = rng.randint(1, 9)
        successes = [rng.random() < rng.random() for _ in range(n)]
        k = rng.randint(1, n)
        assert fast_p_at_k(n, sum(successes), k) == pytest.approx(brute_fast_at_k(successes, k), abs=1e-12)


def test_fast_p_at_k_equals_binomial_formula_for_large_n_and_is_not_the_biased_one():
    n, c, k = 500, 7, 40
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert fast_p_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)
    assert fast_p_at_k(n, c, k) != pytest.approx(1 - (1 - c / n) ** k, rel=1e-6)
    assert fast_p_at_k(10, 3, 1) == pytest.approx(0.3)
    assert fast_p_at_k(10, 0, 10) == 0.0
    assert fast_p_at_k(10, 1, 10) == 1.0


def test_fast_p_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        fast_p_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        expected_best_speedup_at_k([1.0, 2.0], 3)


def test_expected_best_speedup_matches_enumeration_with_ties_and_failures():
    rng = random.Random(2)
    for _ in range(300):
        n = rng.randint(1, 8)
        values = [0.0 if rng.random() < 0.3 else round(rng.uniform(0.1, 5.0), 1) for _ in range(n)]
        if n > 2:
            values[1] = values[0]  # a tie
        k = rng.randint(1, n)
        assert expected_best_speedup_at_k(values, k) == pytest.approx(brute_expected_max(values, k), abs=1e-12)


def test_order_statistic_weights_are_a_distribution_for_large_n():
    w = order_statistic_weights(1000, 37)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert (w[:36] == 0).all() and (w >= 0).all()


def test_estimators_with_hypothesis_if_installed():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.given(st.lists(st.floats(0, 10), min_size=1, max_size=7), st.data())
    @hypothesis.settings(max_examples=200, deadline=None)
    def check(values, data):
        k = data.draw(st.integers(1, len(values)))
        assert expected_best_speedup_at_k(values, k) == pytest.approx(brute_expected_max(values, k), abs=1e-9)
        succ = [v > 1 for v in values]
        assert fast_p_at_k(len(values), sum(succ), k) == pytest.approx(brute_fast_at_k(succ, k), abs=1e-12)

    check()


def test_k_grid():
    assert k_grid(16) == [1, 2, 4, 8, 16]
    assert k_grid(12) == [1, 2, 4, 8, 12]
    assert k_grid(1) == [1]
    assert k_grid(10, [1, 3, 64]) == [1, 3]


# ---------------------------------------------------------------- surprisal

def test_surprisal_variants():
    s = surprisal_from_logprobs([-1.0, -2.0, -3.0, -4.0], 1, 3)
    assert (s.nll_sum_code, s.nll_mean_code) == (5.0, 2.5)
    assert (s.nll_sum_all, s.nll_mean_all) == (10.0, 2.5)
    assert (s.n_code_tokens, s.n_tokens) == (2, 4)
    empty = surprisal_from_logprobs([-1.0, -2.0], 2, 2)
    assert math.isnan(empty.nll_sum_code) and math.isnan(empty.nll_mean_code) and empty.n_code_tokens == 0
    assert empty.nll_mean_all == 1.5
    clipped = surprisal_from_logprobs([-1.0, -2.0], 1, 99)
    assert clipped.nll_sum_code == 2.0 and clipped.n_code_tokens == 1
    none = surprisal_from_logprobs([], 0, 0)
    assert math.isnan(none.nll_mean_all) and none.n_tokens == 0


# ---------------------------------------------------------------- selection on a hand-built unit

def hand_unit() -> pd.DataFrame:
    """6 samples; expected selections are written out in the tests below."""
    rows = [
        # idx, correct, speedup, mean_code, n_code_tokens, mean_all, sum_all
        (0, False, 0.0, 5.0, 30, 5.0, 1.0),   # most surprising, but incorrect: never selected
        (1, True, 0.9, 0.5, 10, math.nan, 1.0),
        (2, True, 1.5, 2.0, 4, 1.0, 1.0),
        (3, True, 3.0, 0.2, 20, 1.0, 1.0),
        (4, True, 1.2, 2.0, 5, 0.5, 1.0),
        (5, True, 0.8, 1.0, 8, 0.7, 1.0),
    ]
    df = pd.DataFrame(rows, columns=["sample_idx", "correct", "speedup", "nll_mean_code", "n_code_tokens",
                                     "nll_mean_all", "nll_sum_all"])
    df["nll_sum_code"] = df["nll_mean_code"] * df["n_code_tokens"]  # 1: 5, 2: 8, 3: 4, 4: 10, 5: 8
    df["fast_1"] = df["correct"] & (df["speedup"] > 1)
    df["task_id"], df["policy"], df["seed"] = "t", "base", 0
    return df


def picks(df: pd.DataFrame) -> dict[tuple[str, str], tuple[int, float, float]]:
    return {(s.rule, s.variant): (s.selected_sample_idx, s.success, s.selected_speedup) for s in select_unit(df)}


EXPECTED_HAND = {
    ("oracle", "-"): (3, 1.0, 3.0),
    ("most_confident", "mean_code"): (3, 1.0, 3.0),
    ("surprisal", "mean_code"): (2, 1.0, 1.5),  # 2 and 4 tie at 2.0: smaller sample_idx wins
    ("surprisal_top3", "mean_code"): (2, 1.0, 1.5),  # top3 = {2, 4, 5}, fastest 2
    ("most_confident", "sum_code"): (3, 1.0, 3.0),
    ("surprisal", "sum_code"): (4, 1.0, 1.2),
    ("surprisal_top3", "sum_code"): (2, 1.0, 1.5),  # top3 = {4, 2, 5}
    ("surprisal", "mean_all"): (2, 1.0, 1.5),  # NaN (idx 1) ranks last; 2 and 3 tie at 1.0
    ("most_confident", "mean_all"): (4, 1.0, 1.2),  # NaN is not "most confident" either
    ("surprisal_top3", "mean_all"): (3, 1.0, 3.0),  # top3 = {2, 3, 5}
    ("surprisal", "sum_all"): (1, 0.0, 0.9),  # all tie: smallest correct sample_idx
    ("most_confident", "sum_all"): (1, 0.0, 0.9),
    ("surprisal_top3", "sum_all"): (2, 1.0, 1.5),  # top3 = {1, 2, 3} by sample_idx... fastest is 3
    ("shortest", "-"): (2, 1.0, 1.5),
    ("longest", "-"): (3, 1.0, 3.0),
}
# top3 under sum_all (all tied) is {1, 2, 3}; the fastest of those is 3.
EXPECTED_HAND[("surprisal_top3", "sum_all")] = (3, 1.0, 3.0)


def test_selection_rules_on_hand_built_unit():
    got = picks(hand_unit())
    for key, expected in EXPECTED_HAND.items():
        assert got[key] == expected, key
    assert got[("random", "-")][1] == pytest.approx(3 / 5)
    assert got[("random", "-")][2] == pytest.approx((0.9 + 1.5 + 3.0 + 1.2 + 0.8) / 5)


def test_selection_is_independent_of_row_order():
    df = hand_unit()
    for seed in range(5):
        shuffled = df.sample(frac=1.0, random_state=seed)
        assert picks(shuffled) == picks(df)


def test_random_rules_equal_average_over_all_choices():
    df = hand_unit()
    correct = df[df["correct"]]
    sel = {(s.rule, s.variant): s for s in select_unit(df)}
    speeds = correct["speedup"].tolist()
    # random: average over each single choice
    assert sel[("random", "-")].success == pytest.approx(np.mean([s > 1 for s in speeds]))
    assert sel[("random", "-")].selected_speedup == pytest.approx(np.mean(speeds))
    assert sel[("random", "-")].selected_log_speedup == pytest.approx(np.mean(np.log(speeds)))
    # random_top3: average over every 3-subset of the fastest in it
    subsets = list(itertools.combinations(speeds, 3))
    assert sel[("random_top3", "-")].success == pytest.approx(np.mean([max(s) > 1 for s in subsets]))
    assert sel[("random_top3", "-")].selected_speedup == pytest.approx(np.mean([max(s) for s in subsets]))
    assert sel[("random_top3", "-")].selected_log_speedup == pytest.approx(np.mean([math.log(max(s)) for s in subsets]))


def test_random_top3_with_fewer_than_three_correct_is_oracle():
    df = hand_unit()
    df.loc[df["sample_idx"].isin([1, 3, 5]), "correct"] = False
    df["fast_1"] = df["correct"] & (df["speedup"] > 1)
    sel = {(s.rule, s.variant): s for s in select_unit(df)}
    assert sel[("random_top3", "-")].selected_speedup == pytest.approx(1.5)
    assert sel[("surprisal_top3", "mean_code")].selected_sample_idx == 2
    assert sel[("surprisal_top3", "mean_code")].n_timed == 2


def test_unit_without_correct_sample_fails_every_rule():
    df = hand_unit()
    df["correct"] = False
    df["fast_1"] = False
    for s in select_unit(df):
        assert (s.success, s.selected_speedup, s.selected_sample_idx) == (0.0, 0.0, -1)
        assert s.selected_log_speedup == pytest.approx(math.log(GEOMEAN_EPS))


def test_aggregate_rates_geomeans_and_bootstrap():
    a = hand_unit()
    b = hand_unit().assign(task_id="u")
    b.loc[b["sample_idx"] == 3, "speedup"] = 0.95  # now the most-confident pick of task u is slow
    b["fast_1"] = b["correct"] & (b["speedup"] > 1)
    c = hand_unit().assign(task_id="v", correct=False, fast_1=False)
    per_unit = select_all(pd.concat([a, b, c], ignore_index=True))
    agg = aggregate_selection(per_unit, n_boot=500, seed=3).set_index(["rule", "variant"])
    mc = agg.loc[("most_confident", "mean_code")]
    assert mc["success_rate"] == pytest.approx(1 / 3)
    assert mc["n_tasks"] == 3 and mc["n_units_solvable"] == 2
    assert mc["geomean_speedup"] == pytest.approx((3.0 * 0.95 * GEOMEAN_EPS) ** (1 / 3))
    assert mc["geomean_speedup_solvable"] == pytest.approx((3.0 * 0.95) ** 0.5)
    assert mc["mean_speedup"] == pytest.approx((3.0 + 0.95 + 0) / 3)
    for _, row in agg.iterrows():
        assert 0 <= row["success_lo"] <= row["success_rate"] + 1e-12 <= row["success_hi"] + 2e-12 <= 1 + 2e-12
    assert agg.loc[("random", "-"), "diff_lo"] == 0 == agg.loc[("random", "-"), "diff_hi"]
    again = aggregate_selection(per_unit, n_boot=500, seed=3)
    pd.testing.assert_frame_equal(again, agg.reset_index()[again.columns])


# ---------------------------------------------------------------- merge, tables, end to end

def test_merge_adds_outcomes_and_surprisal(tmp_path: Path):
    samples, evals = synthetic_records(n_tasks=3, n_samples=6)
    evals.loc[0, ["correct", "status", "speedup", "speedup_lo"]] = [True, "ok", 1.0, 0.9]  # exactly 1: not fast
    samples.to_parquet(tmp_path / "s.parquet")
    evals.to_parquet(tmp_path / "e.parquet")
    merged = merge_samples_and_evaluations([tmp_path / "s.parquet"], [tmp_path / "e.parquet"])
    assert len(merged) == len(samples)
    first = merged[(merged.task_id == evals.task_id[0]) & (merged.sample_idx == evals.sample_idx[0])].iloc[0]
    assert first["correct"] and not first["fast_1"] and not first["fast_1_sig"]
    assert (merged["fast_1"] == (merged["correct"] & (merged["speedup"] > 1))).all()
    assert (merged["fast_1_sig"] == (merged["correct"] & (merged["speedup_lo"] > 1))).all()
    for (_, row), (_, s) in zip(merged.iterrows(), samples.sort_values(["task_id", "policy", "seed", "sample_idx"]).iterrows()):
        exp = surprisal_from_logprobs(s["token_logprobs"], s["code_token_start"], s["code_token_end"])
        assert row["n_code_tokens"] == exp.n_code_tokens
        assert (math.isnan(row["nll_mean_code"]) and math.isnan(exp.nll_mean_code)) or row["nll_mean_code"] == pytest.approx(exp.nll_mean_code)
    assert "token_ids" not in merged


def test_merge_refuses_samples_without_evaluation(tmp_path: Path):
    samples, evals = synthetic_records(n_tasks=1, n_samples=4)
    samples.to_parquet(tmp_path / "s.parquet")
    evals.iloc[:-1].to_parquet(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="no evaluation"):
        merge_samples_and_evaluations([tmp_path / "s.parquet"], [tmp_path / "e.parquet"])


def test_teacher_forced_scores_replace_sampled_surprisal(tmp_path: Path):
    samples, evals = synthetic_records(n_tasks=1, n_samples=4)
    samples.to_parquet(tmp_path / "s.parquet")
    evals.to_parquet(tmp_path / "e.parquet")
    scores = samples[["task_id", "policy", "seed", "sample_idx"]].copy()
    scores["token_logprobs"] = [[-0.5] * 6] * len(scores)
    scores["code_token_start"], scores["code_token_end"] = 2, 4
    scores.to_parquet(tmp_path / "sc.parquet")
    merged = merge_samples_and_evaluations([tmp_path / "s.parquet"], [tmp_path / "e.parquet"], [tmp_path / "sc.parquet"])
    assert (merged["nll_sum_code"] == 1.0).all() and (merged["nll_mean_all"] == 0.5).all()
    assert (merged["n_code_tokens"] == 2).all()


def test_table_round_trip_with_header(tmp_path: Path):
    df = pd.DataFrame({"rule": ["oracle", "random"], "variant": ["-", "-"], "rate": [0.5, 1 / 3], "n": [3, 4]})
    prov = {"config_hash": "abc123", "versions": {"torch": "2.13", "python": "3.11"}, "hardware": {"cpu": "X: Y"},
            "note": "two\nlines", "ks": [1, 2]}
    path = write_table(df, tmp_path / "t.csv", {"fast_1": "correct and speedup > 1"}, prov, unit="rules")
    back, header = read_table(path)
    pd.testing.assert_frame_equal(back, df)
    assert header["table"] == "t" and header["unit"] == "rules"
    with pytest.raises(ValueError, match="unit"):
        write_table(df, tmp_path / "u.csv", {}, prov, unit=" ")
    assert header["definition.fast_1"] == "correct and speedup > 1"
    assert header["versions.torch"] == "2.13" and header["hardware.cpu"] == "X: Y"
    assert header["note"] == "two lines" and header["ks"] == "[1, 2]"
    assert path.read_text().startswith("# table: t\n")


def test_run_analysis_end_to_end(tmp_path: Path):
    sp, ep = write_synthetic_run(tmp_path / "in", n_tasks=5, n_samples=8, seeds=(0, 1), seed=4)
    run_analysis(sp, ep, {"bootstrap": 200, "seed": 1}, {"config_hash": "h"}, tmp_path / "out")
    for name in ANALYSIS_TABLES.values():
        assert (tmp_path / "out" / name).stat().st_size > 0
    merged = pd.read_parquet(tmp_path / "out" / "samples_evaluated.parquet")
    sel, header = read_table(tmp_path / "out" / "selection.csv")
    assert header["config_hash"] == "h" and header["settings.primary_variant"] == "mean_code"
    scaling, _ = read_table(tmp_path / "out" / "scaling.csv")
    fast1 = scaling[(scaling.metric == "fast_p@k") & (scaling.p == 1)]
    assert list(fast1.k) == [1, 2, 4, 8]
    # k = 1 is the per-sample rate; k = K (all samples of a unit) is the oracle's task success.
    assert fast1.value.iloc[0] == pytest.approx(merged["fast_1"].mean())
    oracle = sel[sel.rule == "oracle"].iloc[0]
    assert fast1.value.iloc[-1] == pytest.approx(oracle["success_rate"])
    best = scaling[scaling.metric == "expected_best_speedup@k"]
    assert best.value.iloc[-1] == pytest.approx(oracle["mean_speedup"])
    assert (np.diff(fast1.value) >= -1e-12).all()
    # signal check recomputed by hand
    signal, _ = read_table(tmp_path / "out" / "signal.csv")
    sig = signal.set_index("check")
    assert sig.loc["share_correct", "value"] == pytest.approx(merged["correct"].mean())
    per_task = merged.groupby("task_id").agg(c=("correct", "sum"), n=("correct", "size"), s=("fast_1_sig", "sum"))
    assert sig.loc["tasks_mixed_correctness", "value"] == ((per_task.c > 0) & (per_task.c < per_task.n)).sum()
    assert sig.loc["tasks_with_speed_signal", "value"] == ((per_task.s > 0) & (per_task.s < per_task.c)).sum()
    assert sig.loc["share_correct", "pass"] == (merged["correct"].mean() >= 0.25)
    stats, _ = read_table(tmp_path / "out" / "sample_stats.csv")
    assert stats["n_samples"].sum() == len(merged)
    from vegtts.records import STATUSES

    assert (stats[[f"n_{s}" for s in STATUSES]].sum(axis=1) == stats["n_samples"]).all()
    assert (stats["n_correct_programs"] <= stats["n_programs"]).all() and (stats["n_programs"] <= stats["n_samples"]).all()


# ---------------------------------------------------------------- statistics

def test_paper_statistics_reproduce_its_numbers():
    from vegtts.analysis.statistics import cohens_h, sign_test_one_sided

    assert cohens_h(0.8, 0.5) == pytest.approx(0.6435, abs=1e-4)  # paper: h = 0.64
    assert sign_test_one_sided(3, 0) == pytest.approx(0.125)  # paper: 3 of 3 discordant, p = 0.125
    assert math.isnan(sign_test_one_sided(0, 0))


def test_partial_spearman_removes_a_pure_length_effect():
    from vegtts.analysis.statistics import partial_spearman

    rng = np.random.default_rng(0)
    length = rng.uniform(5, 50, 400)
    nll = length + rng.normal(0, 1, 400)  # surprisal tracks length only
    speed = length + rng.normal(0, 1, 400)  # and so does speed
    raw = pd.Series(nll).corr(pd.Series(speed), method="spearman")
    r, p = partial_spearman(nll, speed, length)
    assert raw > 0.9 and abs(r) < 0.15 and p > 0.001


def test_paired_comparisons_count_discordant_units():
    from vegtts.analysis.statistics import paired_comparisons

    a = hand_unit()  # surprisal(mean_code) picks 2 (1.5), most_confident picks 3 (3.0): both succeed
    b = hand_unit().assign(task_id="u")
    b.loc[b["sample_idx"] == 3, "speedup"] = 0.95  # most_confident now fails, surprisal still succeeds
    b["fast_1"] = b["correct"] & (b["speedup"] > 1)
    comp = paired_comparisons(select_all(pd.concat([a, b], ignore_index=True)))
    row = comp[(comp.variant == "mean_code") & (comp.rule_a == "surprisal") & (comp.rule_b == "most_confident")].iloc[0]
    assert (row["tasks_a_better"], row["tasks_b_better"], row["n_units"]) == (1, 0, 2)
    assert row["mcnemar_exact_p"] == pytest.approx(1.0)  # 1 of 1 discordant task
    assert row["rate_a"] == 1.0 and row["rate_b"] == 0.5
    assert row["median_speedup_ratio"] == pytest.approx(math.exp(np.median([math.log(1.5 / 3.0), math.log(1.5 / 0.95)])))
