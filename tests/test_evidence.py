"""Issue 12: statistics that count programs, not copies, and a report that claims only what holds.

Each test names the finding it guards against; each would have failed on the code before the fix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vegtts.analysis import claims
from vegtts.analysis.programs import (
    distinct_programs,
    is_reference_copy,
    reference_copy_column,
)
from vegtts.analysis.run import (
    flagged_tasks,
    resolve_settings,
    run_analysis,
)
from vegtts.analysis.selection import select_all
from vegtts.analysis.statistics import (
    clustered_correlations,
    paired_comparisons,
    stratified_permutation_p,
    surprisal_correlations,
)
from vegtts.analysis.synthetic import synthetic_records
from vegtts.analysis.tables import read_table
from vegtts.outputs import ANALYSIS_TABLES

# ---------------------------------------------------------------- helpers


def copied_programs_samples(seed: int = 0, n_tasks: int = 11, copies: int = 8) -> pd.DataFrame:
    """Correct samples where each task has 2 programs copied `copies` times each; within a task the
    faster program is the more surprising one in half the tasks, the less in the other half."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tasks):
        centre = rng.normal(0, 0.5)
        for j in range(2):
            speed = float(np.exp(centre + (0.2 if j else -0.2)))
            nll = float(centre + rng.normal(0, 0.05) + (0.1 if (j == 1) == (t % 2 == 0) else -0.1))
            for c in range(copies):
                rows.append({"policy": "base", "seed": 0, "task_id": f"t{t:02d}", "sample_idx": 2 * c + j,
                             "code_sha256": f"t{t}p{j}", "correct": True, "speedup": speed, "fast_1": speed > 1,
                             "n_code_tokens": 10 + j, "n_tokens": 12 + j,
                             **{f"nll_{v}": nll for v in ("mean_code", "sum_code", "mean_all", "sum_all")}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- copies are one piece of evidence


def test_correlations_count_distinct_programs_and_print_no_independence_p():
    """Finding: 88 correct samples (21 programs) were correlated as 88 independent points, p = 2.4e-5."""
    samples = copied_programs_samples()
    corr = surprisal_correlations(samples, n_boot=300, seed=0, n_perm=300)
    row = corr[corr["variant"] == "mean_code"].iloc[0]
    assert row["n_samples"] == 11 * 16 and row["n_programs"] == 22 and row["n_tasks"] == 11
    assert row["unit"] == "distinct correct programs"
    programs = distinct_programs(samples, ["nll_mean_code"])
    from scipy import stats

    assert row["spearman_nll_speedup"] == pytest.approx(stats.spearmanr(programs["nll_mean_code"], programs["speedup"])[0])
    # the sample-level p-value of the old table is not there; the interval resamples tasks
    assert not {"p", "p_partial", "p_length"} & set(corr.columns)
    assert row["spearman_nll_speedup_lo"] <= row["spearman_nll_speedup"] <= row["spearman_nll_speedup_hi"]
    # copies would have made the sample-level test look decisive: the same rho on 8x the points
    naive_p = stats.spearmanr(samples["nll_mean_code"], samples["speedup"])[1]
    program_p = stats.spearmanr(programs["nll_mean_code"], programs["speedup"])[1]
    assert naive_p < program_p / 100


def test_quartiles_bin_programs_not_copies():
    from vegtts.analysis.statistics import surprisal_quartiles

    q = surprisal_quartiles(copied_programs_samples())
    g = q[(q.variant == "mean_code") & (q.scheme == "global")]
    assert g["n_programs"].sum() == 22 and g["n_samples"].sum() == 176
    assert sorted(g["n_programs"]) == [5, 5, 6, 6]  # equal-count bins of programs, not of copies
    assert q[q.scheme == "per_task"].empty  # no task has 4 distinct correct programs


def test_within_task_association_has_a_permutation_p_that_is_calibrated():
    rng = np.random.default_rng(1)
    null_ps, alt_ps = [], []
    for _ in range(60):
        task = np.repeat(np.arange(6), 5)
        x = rng.normal(size=30) + task  # tasks differ in level: pooled rho would be driven by that
        y = rng.normal(size=30) + task
        null_ps.append(stratified_permutation_p(x, y, task, 199, rng))
        alt_ps.append(stratified_permutation_p(x, x - task + 0.3 * rng.normal(size=30), task, 199, rng))
    null_ps = np.array(null_ps)
    assert 0.4 <= null_ps.mean() <= 0.6 and 0.1 <= np.mean(null_ps < 0.25) <= 0.4  # uniform under no association
    assert np.mean(np.array(alt_ps) < 0.05) > 0.9
    # the pooled rho of the null data is large (between-task levels), the within-task one is not
    out = clustered_correlations(x, y, np.zeros(30), task, 200, rng, n_perm=0)
    assert out["spearman_nll_speedup"] > 0.5 and abs(out["mean_within_task_spearman"]) < 0.5


def test_reference_copies_are_recognised_as_syntax_trees():
    ref = "import torch\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        '''doc'''\n        return torch.relu(x)\n"
    body_copy = ref + "\nclass ModelNew(Model):\n    def forward(self, x):\n        return torch.relu( x )  # same\n"
    body_other = ref + "\nclass ModelNew(Model):\n    def forward(self, x):\n        return x.clamp(min=0)\n"
    module_copy = ref + ("\nclass ModelNew(torch.nn.Module):\n    def __init__(self):\n        super(ModelNew, self).__init__()\n"
                         "    def forward(self, x):\n        return torch.relu(x)\n")
    module_ref_init = ref.replace("    def forward", "    def __init__(self):\n        super(Model, self).__init__()\n    def forward")
    assert is_reference_copy(body_copy)
    annotated = ref.replace("def forward(self, x):", "def forward(self, x: torch.Tensor) -> torch.Tensor:")
    assert is_reference_copy(annotated + body_copy[len(ref):])  # the body format writes no annotations
    assert not is_reference_copy(body_other)
    assert not is_reference_copy(module_copy)  # Model has no __init__ of its own: not the same module
    assert is_reference_copy(module_ref_init + module_copy[len(ref):])
    assert not is_reference_copy("") and not is_reference_copy("def (")
    flags = reference_copy_column([body_other, body_other], ["", "reference_copy,excessive_speedup"])
    assert list(flags) == [False, True]  # the evaluator's flag counts when present


# ---------------------------------------------------------------- comparisons: paired, over tasks, E[log]


def _unit(task: str, speedups: list[float], nll: list[float]) -> pd.DataFrame:
    n = len(speedups)
    return pd.DataFrame({"policy": "base", "seed": 0, "task_id": task, "sample_idx": range(n),
                         "code_sha256": [f"{task}{i}" for i in range(n)], "correct": True, "speedup": speedups,
                         "fast_1": [s > 1 for s in speedups], "has_code": True, "n_code_tokens": 10, "n_tokens": 12,
                         **{f"nll_{v}": nll for v in ("mean_code", "sum_code", "mean_all", "sum_all")}})


def test_wilcoxon_compares_expected_log_speedup_like_the_geomean_ratio():
    """Finding: the Wilcoxon test used log E[speedup] of random, the geomean ratio E[log speedup].
    Here surprisal picks 1.0x; random's E[speedup] = (1 + 0.1 + 3) / 3 > 1 but E[log speedup] = log(0.1 * 3) / 3 < 0."""
    units = pd.concat([_unit(f"t{i}", [1.0, 0.1 + 0.2 * (i % 2) / 10, 3.0], [2.0, 1.0, 0.5]) for i in range(8)],
                      ignore_index=True)
    per_unit = select_all(units, variants=("mean_code",))
    row = paired_comparisons(per_unit, n_boot=200, pairs=(("surprisal", "random"),)).iloc[0]
    e_log = per_unit[per_unit.rule == "random"]["selected_log_speedup"].to_numpy()
    assert (e_log < 0).all()  # random is slower in the geometric sense: surprisal is better on E[log]
    assert row["geomean_ratio"] > 1 and row["median_speedup_ratio"] > 1
    from scipy import stats

    assert row["wilcoxon_p_two_sided"] == pytest.approx(stats.wilcoxon(0.0 - e_log).pvalue)


def test_wilcoxon_signed_rank_matches_scipy():
    from scipy import stats

    from vegtts.analysis.statistics import wilcoxon_signed_rank

    rng = np.random.default_rng(4)
    d = rng.normal(0.3, 1, 12)
    assert wilcoxon_signed_rank(d)[1] == pytest.approx(stats.wilcoxon(d, method="exact").pvalue)
    big = np.round(rng.normal(0.2, 1, 40), 1)  # ties and zeros: normal approximation with tie correction
    assert wilcoxon_signed_rank(big)[1] == pytest.approx(stats.wilcoxon(big, method="approx").pvalue, rel=1e-9)
    tied = np.array([0.5, 0.5, -0.2, 0.5, 0.0, 1.0, -0.2, 0.5])
    assert wilcoxon_signed_rank(tied)[1] == pytest.approx(stats.wilcoxon(tied).pvalue)  # scipy: permutation
    assert math.isnan(wilcoxon_signed_rank(np.zeros(4))[1])


def test_tests_run_over_tasks_not_seeds():
    """With two seeds per task, sign/McNemar tests over units would count a task twice: they are not given."""
    a = pd.concat([_unit("t0", [2.0, 0.5], [1.0, 0.5]), _unit("t0", [2.0, 0.5], [1.0, 0.5]).assign(seed=1)])
    per_unit = select_all(a, variants=("mean_code",))
    row = paired_comparisons(per_unit, n_boot=0, pairs=(("surprisal", "most_confident"),)).iloc[0]
    assert row["n_units"] == 2 and row["n_tasks"] == 1
    assert row["tasks_a_better"] == 1 and math.isnan(row["mcnemar_exact_p"])
    one_seed = paired_comparisons(select_all(a[a.seed == 0], variants=("mean_code",)), n_boot=0,
                                  pairs=(("surprisal", "most_confident"),)).iloc[0]
    assert one_seed["mcnemar_exact_p"] == pytest.approx(1.0)


def test_verdicts_need_the_interval_to_exclude_the_null():
    units = pd.concat([_unit(f"t{i}", [2.0, 0.5], [1.0, 0.5]) for i in range(12)], ignore_index=True)
    comp = paired_comparisons(select_all(units, variants=("mean_code",)), n_boot=300, primary_variant="mean_code")
    r = comp[(comp.rule_a == "surprisal") & (comp.rule_b == "most_confident") & (comp.variant == "mean_code")].iloc[0]
    assert r["task_success_verdict"] == "a better" and r["diff_lo"] > 0
    assert set(comp["scope"]) == {"planned", "all_pairs"}
    # all pairs under the primary variant exist once each
    prim = comp[comp.variant.isin(["mean_code", "-"])]
    assert not prim.duplicated(["rule_a", "rule_b"]).any()
    # mixed tasks: half favour surprisal, half most-confident: a tie, whatever the point estimate
    mixed = pd.concat([_unit(f"t{i}", [2.0, 0.5] if i % 2 else [0.5, 2.0], [1.0, 0.5]) for i in range(11)],
                      ignore_index=True)
    comp = paired_comparisons(select_all(mixed, variants=("mean_code",)), n_boot=300,
                              pairs=(("surprisal", "most_confident"),)).iloc[0]
    assert comp["diff"] != 0 and comp["task_success_verdict"] == "tie"


# ---------------------------------------------------------------- report language


def _selection(rates: dict[str, float], lo: float = 0.3, hi: float = 0.9, n_tasks: int = 12) -> pd.DataFrame:
    rows = []
    for rule, rate in rates.items():
        rows.append({"policy": "base", "rule": rule, "variant": "mean_code" if rule in ("surprisal", "most_confident", "surprisal_top3") else "-",
                     "kind": "main", "n_tasks": n_tasks, "n_units": n_tasks, "n_units_solvable": n_tasks - 1,
                     "success_rate": rate, "success_lo": lo, "success_hi": hi,
                     "geomean_speedup": 0.77, "geomean_lo": 0.19, "geomean_hi": 1.82,
                     "geomean_speedup_solvable": 1.42, "geomean_solvable_lo": 1.04, "geomean_solvable_hi": 2.02})
    return pd.DataFrame(rows)


def _comparison(a: str, b: str, diff: float, lo: float, hi: float, verdict: str) -> dict:
    return {"policy": "base", "variant": "mean_code", "scope": "all_pairs", "rule_a": a, "rule_b": b, "diff": diff,
            "diff_lo": lo, "diff_hi": hi, "task_success_verdict": verdict, "geomean_ratio_solvable": 1.0,
            "geomean_ratio_solvable_lo": 0.9, "geomean_ratio_solvable_hi": 1.1, "speedup_verdict": "tie"}


def test_first_screen_calls_ties_ties_and_names_no_winner():
    """Finding: 'surprisal top-3 is the best rule' while it tied five others and the oracle."""
    sel = _selection({"oracle": 0.58, "surprisal_top3": 0.58, "surprisal": 0.5, "random": 0.5, "most_confident": 0.5})
    comp = pd.DataFrame([_comparison(a, b, 0.08, -0.1, 0.25, "tie") for a, b in
                         (("surprisal_top3", "surprisal"), ("surprisal_top3", "random"), ("surprisal", "random"),
                          ("oracle", "surprisal_top3"), ("oracle", "random"))])
    text = " ".join(claims.task_success_sentences(sel, comp, "base", "mean_code"))
    assert "No rule beats another" in text and "tie" in text
    assert "best" not in text.lower() and "winning" not in text.lower()
    assert "oracle 58% [30, 90]" in text  # every headline rate with its interval
    assert "The oracle (post hoc) beats no rule; it ties with" in text
    comp = pd.DataFrame([_comparison("surprisal_top3", "random", 0.3, 0.1, 0.5, "a better"),
                         _comparison("surprisal", "random", 0.1, -0.1, 0.3, "tie")])
    text = " ".join(claims.task_success_sentences(sel, comp, "base", "mean_code"))
    assert "**surprisal top-3 beats random (exact)** by +30 points [+10, +50]" in text
    assert "Not beaten by any rule: surprisal top-3, surprisal" in text


def test_geomean_headline_is_solvable_only_and_states_the_floor():
    """Finding: 0.77x [0.19, 1.82] quoted, set by the 0.001 floor of one unsolvable task."""
    sel = _selection({"oracle": 0.58, "random": 0.5})
    text = " ".join(claims.speedup_sentences(sel, pd.DataFrame(), "base", "mean_code"))
    assert "over the 11 tasks with a correct sample (no floor): oracle 1.42x [1.04, 2.02]" in text
    assert "floor 0.001x" in text and "0.77x [0.19, 1.82]" in text


@pytest.mark.parametrize("raw, partial, expected, forbidden", [
    ((0.43, 0.1, 0.7), (-0.47, -0.8, -0.1), "reverses sign", "survives"),  # the case
    ((0.43, 0.1, 0.7), (0.40, 0.1, 0.6), "survives length control", "reverses"),
    ((0.43, 0.1, 0.7), (0.05, -0.3, 0.4), "Length accounts for it", "survives"),
    ((0.43, -0.23, 0.70), (0.1, -0.4, 0.5), "No association is distinguishable", "survives"),
])
def test_length_verdict_reads_the_sign(raw, partial, expected, forbidden):
    corr = pd.DataFrame([{"policy": "base", "variant": "mean_code", "n_programs": 21, "n_tasks": 11, "n_samples": 88,
                          "spearman_nll_speedup": raw[0], "spearman_nll_speedup_lo": raw[1], "spearman_nll_speedup_hi": raw[2],
                          "partial_spearman_given_length": partial[0], "partial_spearman_given_length_lo": partial[1],
                          "partial_spearman_given_length_hi": partial[2], "spearman_length_speedup": 0.6,
                          "spearman_length_speedup_lo": 0.2, "spearman_length_speedup_hi": 0.8,
                          "mean_within_task_spearman": 0.1, "mean_within_task_spearman_lo": -0.5,
                          "mean_within_task_spearman_hi": 0.6, "n_tasks_with_within_rho": 3,
                          "p_within_task_permutation": 0.4}])
    text = claims.length_verdict(corr, "base", "mean_code")
    assert expected in text and forbidden not in text
    assert "21 distinct correct programs in 11 tasks (88 samples; copies count once)" in text


# ---------------------------------------------------------------- tables: unit, provenance, exclusions, rejections


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("evidence")
    samples, evals = synthetic_records(n_tasks=6, n_samples=8, seeds=(0,), seed=5)
    evals.loc[evals.index[:3], ["status", "correct", "guard", "error"]] = ["rejected", False, "untimed_work",
                                                                         "untimed requests take 21.53 ms more"]
    samples.to_parquet(d / "s.parquet")
    evals.to_parquet(d / "e.parquet")
    tasks = {"tasks": [{"task_id": t, "validation": ["constant_output: every seed gives the same output"] if t == "task03" else []}
                       for t in sorted(samples.task_id.unique())]}
    (d / "tasks.json").write_text(json.dumps(tasks))
    prov = {"config_hash": "cafe01", "store": {"samples": "s0123", "evaluations": "e4567"},
            "code": {"git_commit": "abcdef123456", "git_dirty": False, "package_fingerprint": "f00d"}}
    run_analysis([d / "s.parquet"], [d / "e.parquet"], {"bootstrap": 200, "exclude_flagged": ["constant_output"]},
                 prov, d / "tables", tasks_path=d / "tasks.json")
    return d


def test_every_table_states_unit_config_hash_code_version_and_store_keys(analysed: Path):
    for name in ANALYSIS_TABLES.values():
        _, header = read_table(analysed / "tables" / name)
        assert header.get("unit"), name
        assert header["config_hash"] == "cafe01" and header["code.git_commit"] == "abcdef123456", name
        assert header["store.samples"] == "s0123" and header["code.package_fingerprint"] == "f00d", name


def test_flagged_tasks_are_shown_and_can_be_left_out(analysed: Path):
    stats, header = read_table(analysed / "tables" / "sample_stats.csv")
    flagged = stats.set_index("task_id").loc["task03"]
    assert "constant_output" in flagged["validation"] and bool(flagged["excluded"])
    assert header["excluded_tasks"] == '["task03"]'
    sel, _ = read_table(analysed / "tables" / "selection_per_task.csv")
    assert "task03" not in set(sel["task_id"])
    assert flagged_tasks({"a": ["timing: slow"], "b": ["tiny_output: x"]}, ["tiny_output"]) == ["b"]
    assert flagged_tasks({"a": ["timing: slow"], "b": []}, True) == ["a"]
    assert flagged_tasks({"a": ["timing: slow"]}, False) == []
    with pytest.raises(ValueError, match="analysis.exclude_flagged"):
        resolve_settings({"exclude_flagged": "yes"})
    from vegtts.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="exclude_flagged"):
        validate_config({"analysis": {"exclude_flagged": 3}})
    assert validate_config({"analysis": {"exclude_flagged": ["tiny_output"]}})["analysis"]["exclude_flagged"] == ["tiny_output"]


def test_rejections_are_named_with_their_guard(analysed: Path):
    rej, _ = read_table(analysed / "tables" / "rejections.csv")
    assert set(rej["guard"]) == {"untimed_work"} and rej["n_samples"].sum() == 3
    stats, _ = read_table(analysed / "tables" / "sample_stats.csv")
    assert stats["rejected_guards"].fillna("").str.contains("untimed_work x").any()
    assert "untimed_work" in claims.rejection_sentence(rej)


def test_outcomes_give_shares_with_intervals_and_program_counts(analysed: Path):
    out, _ = read_table(analysed / "tables" / "outcomes.csv")
    c = out.set_index("outcome").loc["correct"]
    assert c["share_lo"] <= c["share_of_samples"] <= c["share_hi"]
    assert 0 < c["n_programs"] <= c["n_samples"] and c["n_tasks_total"] == 5  # task03 left out


# ---------------------------------------------------------------- TTT: probe, equivalent K, compute


def test_probe_samples_come_from_a_seed_no_ttt_update_trained_on():
    """Finding: the probe scored sampling.seeds[0], whose first batch TTT seed 0 trained on."""
    from vegtts.config import validate_config
    from vegtts.plan import HELDOUT_SEED_OFFSET, PROBE_SEED, build_plan

    cfg = validate_config({"ttt": {"enabled": True, "seeds": [0, 1], "steps": 2, "tasks": ["relu_where"]}})
    plan = build_plan(cfg, ["relu_where", "sigmoid_exp"], "model", None)
    man = plan.ttt_manifest()
    trained_on = set()
    for e in man["steps"]:
        trained_on |= set(e["train"]["samples"])  # every train batch feeds the next update
    base_seed0 = plan.sample_file(plan.base_sample_key, 0, "relu_where")
    assert man["probe"]["sampling_seed"] == PROBE_SEED not in {0, 1, HELDOUT_SEED_OFFSET, HELDOUT_SEED_OFFSET + 1}
    assert base_seed0 not in man["probe"]["samples"] and f"/s{PROBE_SEED}/" in man["probe"]["samples"][0]
    assert not set(man["probe"]["samples"]) & trained_on
    with pytest.raises(ValueError, match="ttt.seeds"):
        build_plan(validate_config({"ttt": {"enabled": True, "seeds": [PROBE_SEED], "tasks": ["relu_where"]}}),
                   ["relu_where"], "model", None)


def test_probe_rows_count_programs_and_say_why_rho_is_undefined():
    """Finding: n = 12 probe samples were 5 programs; the slowest quartile was NaN in every row, unexplained."""
    from vegtts.analysis.ttt import probe_rows

    progs = pd.DataFrame({"task_id": ["a"] * 3 + ["b"] * 3, "code_sha256": list("uvwxyz"),
                          "correct": [True, True, False, True, True, True],
                          "speedup": [1.5, 1.5, 0.0, 2.0, 1.0, 0.5], "nll_mean_code": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                          "n_copies": [4, 1, 1, 3, 2, 1]})
    rows = {r["subset"]: r for r in probe_rows(progs, "nll_mean_code", 100, np.random.default_rng(0))}
    assert rows["all"]["n_programs"] == 6 and rows["all"]["n_samples"] == 12 and rows["all"]["n_tasks"] == 2
    assert rows["correct"]["n_programs"] == 5
    slow = rows["slowest_quartile_of_correct"]
    assert slow["n_programs"] == 2 and math.isnan(slow["rho"]) and "fewer than 3" in slow["note"]
    assert rows["correct"]["note"] == "" and np.isfinite(rows["correct"]["rho"])
    assert "p_all" not in rows["all"] and "p_within_task_permutation" in rows["all"]


def test_equivalent_k_at_the_ceiling_is_a_bound():
    """Finding: equivalent K = 22.2 at 0.4999, 24.5 at 0.49999, 27.0 at 0.5: the pool's ceiling, not TTT."""
    from vegtts.analysis.ttt import bon_curve, equivalent_k

    pool = pd.DataFrame({"task_id": ["a"] * 32 + ["b"] * 32,
                         "fast_1": [i < 3 for i in range(32)] + [False] * 32})  # ceiling 0.5
    curve = bon_curve(pool)
    texts = {equivalent_k(v, curve)[1] for v in (0.4999, 0.49999, 0.5)}
    assert len(texts) == 1 and next(iter(texts)).startswith("at least")
    k, text = equivalent_k(0.25, curve)
    assert not text.startswith("at least") and 1 <= k <= 32
    assert equivalent_k(0.9, curve)[1] == "> 32"


def test_main_equivalent_k_at_the_ceiling_is_a_bound():
    from vegtts.analysis.run import equivalent_k_table

    curve = np.array([0.3, 0.45, 0.49, 0.499, 0.4999, 0.5])
    sel = pd.DataFrame([{"policy": "base", "rule": r, "variant": "-", "kind": "main", "success_rate": v,
                         "mean_speedup": 1.0} for r, v in (("oracle", 0.5), ("random", 0.4999), ("shortest", 0.45))])
    eq = equivalent_k_table(sel, {"base": {("fast_p@k", 1.0): curve, ("expected_best_speedup@k", None): np.ones(6)}})
    ts = eq[eq.measure == "task_success"].set_index("rule")
    assert ts.loc["oracle", "k_matched_text"] == ts.loc["random", "k_matched_text"] == "at least 3"
    assert ts.loc["shortest", "k_matched_text"] == "2" and not ts.loc["shortest", "at_ceiling"]


def test_compute_counts_cache_hits_and_copies_at_zero(tmp_path: Path):
    """Finding: seed 1 step 2 had 16 cache hits and was charged 96 s."""
    from vegtts.analysis.ttt import eval_costs

    df = pd.DataFrame({"code_sha256": ["a", "a", "b", "c", ""], "eval_seconds": [6.0, 6.0, 4.0, 5.0, 0.01],
                       "cached": [False, False, True, False, False]})
    df.to_parquet(tmp_path / "e.parquet")
    c = eval_costs([str(tmp_path / "e.parquet")])
    assert c["eval_seconds"] == pytest.approx(11.0)  # a once (its copy is free), c; b came from the cache
    assert c["eval_seconds_cached"] == pytest.approx(4.0)
    assert (c["n_programs_evaluated"], c["n_cache_hits"]) == (2, 1)
    all_hits = df.assign(cached=True)
    all_hits.to_parquet(tmp_path / "h.parquet")
    assert eval_costs([str(tmp_path / "h.parquet")])["eval_seconds"] == 0.0


def test_wall_time_table_includes_ttt_stages(tmp_path: Path):
    """Finding: the report's wall-time table omitted TTT."""
    from vegtts.report import stage_times_from_benchmarks

    def bench(rel: str, seconds: float) -> str:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\n{seconds}\t0:00:01\n")
        return str(path)

    times = stage_times_from_benchmarks({
        "sample": [bench("store/samples/k/s0/a.benchmark.tsv", 10)],
        "evaluate": [bench("store/evaluations/k/e/s0/a.benchmark.tsv", 5)],
        "ttt_sample": [bench("store/samples/t/s0/a.benchmark.tsv", 7)],
        "ttt_evaluate": [bench("store/evaluations/t/e/s0/a.benchmark.tsv", 3)],
        "ttt_update": [bench("store/ttt/c1/update.benchmark.tsv", 20)],
        "ttt_score": [bench("store/scores/p/c1.benchmark.tsv", 2)],
    })
    assert times["sample"]["seconds"] == 10 and times["ttt_sample"]["seconds"] == 7
    assert times["ttt_update"]["seconds"] == 20 and times["ttt_score"]["seconds"] == 2
    assert times["ttt (all)"]["seconds"] == 32 and times["all"]["seconds"] == 47


# ---------------------------------------------------------------- the measured section and the first screen


def test_measured_section_regenerates_identically_and_detects_drift(analysed: Path, tmp_path: Path):
    from vegtts.measured_section import MEASURED_BEGIN, MEASURED_END, write_measured_section

    exp = tmp_path / "default"
    (exp / "tables").mkdir(parents=True)
    for csv in (analysed / "tables").glob("*.csv"):
        (exp / "tables" / csv.name).write_bytes(csv.read_bytes())
    note = tmp_path / "default_run.md"
    note.write_text(f"# x\n\n## measured\n\n{MEASURED_BEGIN}\nstale numbers: 48.4% correct, oracle 100%\n{MEASURED_END}\n\nrest\n")
    assert write_measured_section(exp, note) is True
    first = note.read_text()
    assert "stale numbers" not in first and first.endswith(f"{MEASURED_END}\n\nrest\n")
    assert "config hash cafe01" in first and "Task success" in first and "untimed_work" in first
    assert write_measured_section(exp, note) is False and note.read_text() == first  # identical on regeneration
    assert write_measured_section(exp, note, check=True) is False
    # tables of another run: --check reports drift and writes nothing
    sel = exp / "tables" / "selection.csv"
    sel.write_text(sel.read_text().replace("cafe01", "beef02"))
    assert write_measured_section(exp, note, check=True) is True and note.read_text() == first
    note.write_text("no markers\n")
    with pytest.raises(ValueError, match="vegtts:measured:begin"):
        write_measured_section(exp, note)


def test_first_screen_of_a_run_claims_only_what_intervals_support(analysed: Path, tmp_path: Path):
    import re

    from vegtts.report import make_report

    html = make_report(analysed / "tables", tmp_path / "nofig", {"experiment": "e"}, {}, None,
                       tmp_path / "r.html").read_text()
    summary = html.split("<h2>Summary</h2>", 1)[1].split("<h2>Figures</h2>", 1)[0]
    text = re.sub(r"<[^>]+>", "", summary)
    assert "Winning" not in text and "best non-oracle" not in text.lower()
    assert "config hash cafe01" in text and "abcdef123456" in text and "s0123" in text
    assert "Left out of every number below" in text and "task03" in text
    assert "untimed_work" in text and "constant_output" in text
    assert "distinct programs" in text and "copies count once" in text
    # every percentage in the task-success sentence carries its interval
    ts = text.split("Task success", 1)[1].split(".", 1)[0].replace("95% intervals", "intervals")
    assert re.findall(r"\d+% \[", ts) and not re.findall(r"\d+%(?! \[)", ts)
    assert "floor 0.001x" in text or "with a correct sample (no floor)" in text


# ---------------------------------------------------------------- simulation: interval coverage


def test_intervals_of_agreeing_tasks_are_not_zero_width():
    """12 tasks that all agree give Jeffreys-like intervals, not [100%, 100%] or [0, 0]."""
    units = pd.concat([_unit(f"t{i}", [2.0, 0.5], [1.0, 0.5]) for i in range(12)], ignore_index=True)
    per_unit = select_all(units, variants=("mean_code",))
    from vegtts.analysis.selection import aggregate_selection

    agg = aggregate_selection(per_unit, n_boot=2000, seed=0).set_index(["rule", "variant"])
    oracle = agg.loc[("oracle", "-")]
    assert oracle["success_rate"] == 1.0 and 0.7 < oracle["success_lo"] < 0.99 and oracle["success_hi"] == pytest.approx(1.0)
    from scipy import stats

    assert oracle["success_lo"] == pytest.approx(stats.beta(12.25, 0.25).ppf(0.025), abs=0.03)  # Beta(s + 1/4, f + 1/4)
    comp = paired_comparisons(per_unit, n_boot=2000, pairs=(("oracle", "surprisal"),)).iloc[0]  # same pick everywhere
    assert comp["diff"] == 0 and comp["diff_lo"] < -0.02 and comp["diff_hi"] > 0.02 and comp["task_success_verdict"] == "tie"


@pytest.mark.slow
@pytest.mark.parametrize("effect", [0.0, 1.5])
def test_comparison_intervals_cover_a_planted_truth_when_samples_repeat_programs(effect: float):
    from vegtts.analysis.synthetic import (
        RepeatedProgramDesign,
        comparison_coverage,
        true_surprisal_vs_random,
    )

    design = RepeatedProgramDesign(n_tasks=12, n_samples=16, effect=effect)
    truth = true_surprisal_vs_random(design, n_tasks=20000, seed=1)
    if effect == 0:  # 0 by symmetry: copies are drawn independently of speed; the Monte Carlo agrees
        assert abs(truth["diff"]) < 0.01 and abs(truth["log_geomean_ratio_solvable"]) < 0.01
        truth = {"diff": 0.0, "log_geomean_ratio_solvable": 0.0}
    else:
        assert truth["diff"] > 0.05 and truth["log_geomean_ratio_solvable"] > 0.05
    cov = comparison_coverage(design, truth, n_reps=150, n_boot=300, seed=2)
    # nominal 95%; the anchors make the difference's interval err on the wide side; the ratio's
    # measured 0.88-0.97 over designs (benchmarks/bench_coverage.py; the percentile bootstrap: 0.75-0.97)
    assert 0.90 <= cov["coverage_diff"] <= 1.0, cov
    assert 0.85 <= cov["coverage_geomean_ratio"] <= 1.0, cov
    assert cov["mean_halfwidth_diff"] < 0.3, cov  # wide enough to cover, not uninformative


@pytest.mark.slow
def test_resampling_units_instead_of_tasks_undercovers_when_seeds_share_programs():
    """Negative control: the coverage check can fail.  Three seeds of a task draw the same programs;
    treating each (seed, task) as independent gives intervals that miss the truth far too often."""
    from vegtts.analysis.synthetic import (
        RepeatedProgramDesign,
        comparison_coverage,
        true_surprisal_vs_random,
    )

    design = RepeatedProgramDesign(n_tasks=8, n_samples=16, n_seeds=3, effect=1.5)
    truth = true_surprisal_vs_random(design, n_tasks=20000, seed=1)
    wrong = comparison_coverage(design, truth, n_reps=100, n_boot=300, seed=3, cluster="unit")
    right = comparison_coverage(design, truth, n_reps=100, n_boot=300, seed=3, cluster="task")
    assert wrong["coverage_diff"] < 0.85 <= right["coverage_diff"], (wrong, right)


def test_the_default_run_note_has_one_generated_measured_section():
    from vegtts.measured_section import MEASURED_BEGIN, MEASURED_END

    text = (Path(__file__).resolve().parents[1] / "benchmarks/results/default_run.md").read_text()
    assert text.count(MEASURED_BEGIN) == 1 and text.count(MEASURED_END) == 1
    assert text.index(MEASURED_BEGIN) < text.index(MEASURED_END)
