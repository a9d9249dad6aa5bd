"""TTT analysis on hand-computed examples: selection rules, Best-of-N reference and equivalent K,
probe statistics, compute accounting, and the TTT plan's content-addressed keys."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vegtts.analysis.ttt import (
    bon_curve,
    bon_pool,
    choose_boa,
    choose_early_stop,
    choose_final,
    compute_summary,
    equal_budget_table,
    equivalent_k,
    per_task_table,
    probe_rows,
    selection_table,
    trajectory_table,
)
from vegtts.config import validate_config
from vegtts.plan import batch_tasks, build_plan

# ---------------------------------------------------------------- selection rules


def test_boa_picks_best_checkpoint_never_step_0_and_ties_go_early():
    assert choose_boa({0: 0.9, 1: 0.2, 2: 0.4, 3: 0.4}) == 2
    with pytest.raises(ValueError):
        choose_boa({0: 0.5})


def test_early_stop_stops_at_first_regression():
    assert choose_early_stop({0: 0.1, 1: 0.3, 2: 0.2, 3: 0.5}) == 1
    assert choose_early_stop({0: 0.1, 1: 0.3, 2: 0.3, 3: 0.4}) == 3  # equal is not a regression
    assert choose_early_stop({0: 0.9, 1: 0.1}) == 1  # step 1 is always taken
    assert choose_final({0: 0.1, 1: 0.3, 2: 0.2}) == 2


def _batches(rows: dict[tuple[int, str, str], list[bool]]) -> pd.DataFrame:
    """rows[(step, batch, task)] = fast_1 flags of its samples (correct = fast_1 here)."""
    out = []
    for (step, batch, task), flags in rows.items():
        for i, f in enumerate(flags):
            out.append({"ttt_seed": 0, "step": step, "batch": batch, "policy": f"p{step}", "task_id": task,
                        "sample_idx": i, "fast_1": f, "correct": f})
    return pd.DataFrame(out)


# Two tasks, K = 2, steps 0..2.  Train-batch per-sample rates: step0 1/4, step1 3/4, step2 2/4;
# heldout: step0 1/4, step1 1/4, step2 4/4.
HAND = {
    (0, "train", "a"): [True, False], (0, "train", "b"): [False, False],
    (1, "train", "a"): [True, True], (1, "train", "b"): [True, False],
    (2, "train", "a"): [False, False], (2, "train", "b"): [True, True],
    (0, "heldout", "a"): [False, False], (0, "heldout", "b"): [True, False],
    (1, "heldout", "a"): [True, False], (1, "heldout", "b"): [False, False],
    (2, "heldout", "a"): [True, True], (2, "heldout", "b"): [True, True],
}


def test_selection_rules_on_hand_example():
    per_task = per_task_table(_batches(HAND))
    traj = trajectory_table(per_task)
    t = traj.set_index(["step", "batch"])
    assert t.loc[(1, "train"), "fast_1_rate"] == 0.75 and t.loc[(2, "heldout"), "fast_1_rate"] == 1.0
    assert t.loc[(0, "train"), "task_success"] == 0.5 and t.loc[(2, "train"), "task_success"] == 0.5
    sel = selection_table(traj, per_task, k=2)
    seed0 = sel[sel["ttt_seed"].astype(str) == "0"].set_index("rule")
    # BoA in-sample: step 1 (0.75 on train), reported on the same train batch.
    assert seed0.loc["boa_in_sample", "chosen_step"] == "1"
    assert seed0.loc["boa_in_sample", "fast_1_rate"] == 0.75
    # Held-out: same choice, reported on step 1's fresh batch: 1/4 (the in-sample number was optimistic).
    assert seed0.loc["boa_held_out", "fast_1_rate"] == 0.25
    assert seed0.loc["boa_held_out", "task_success"] == 0.5
    # Fixed final: step 2 heldout = 4/4.  Early stop: 0.75 -> 0.5 regresses at step 2, keeps step 1.
    assert seed0.loc["fixed_final", "chosen_step"] == "2" and seed0.loc["fixed_final", "fast_1_rate"] == 1.0
    assert seed0.loc["early_stop", "chosen_step"] == "1" and seed0.loc["early_stop", "fast_1_rate"] == 0.25
    # Per-task oracle: task a -> step 1 (2/2 on train), task b -> step 2 (2/2); train mean 1.0,
    # heldout: a at step 1 = 1/2, b at step 2 = 2/2 -> 0.75; task success heldout 2/2.
    oracle = seed0.loc["per_task_oracle"]
    assert oracle["chosen_step"] == "a:1 b:2"
    assert oracle["fast_1_rate_train"] == 1.0 and oracle["fast_1_rate"] == 0.75 and oracle["task_success"] == 1.0
    assert (seed0["rollouts_per_task"] == 6).all()  # (S+1) * K
    mean = sel[sel["ttt_seed"].astype(str) == "mean"].set_index("rule")
    assert mean.loc["boa_held_out", "fast_1_rate"] == 0.25


# ---------------------------------------------------------------- Best-of-N reference, equivalent K


def test_bon_curve_is_the_unbiased_estimator_averaged_over_tasks():
    pool = pd.DataFrame({"task_id": ["a"] * 4 + ["b"] * 4,
                         "fast_1": [True, False, False, False, True, True, False, False]})
    curve = bon_curve(pool).set_index("k")["fast_1_at_k"]
    assert curve[0] == 0.0
    assert curve[1] == pytest.approx((0.25 + 0.5) / 2)
    assert curve[2] == pytest.approx((1 - 3 / 6 + 1 - 1 / 6) / 2)  # 1 - C(n-c,2)/C(n,2)
    assert curve[4] == pytest.approx(1.0)


def test_equivalent_k_interpolates_linearly_between_integers():
    curve = pd.DataFrame({"k": [0, 1, 2, 3, 4], "fast_1_at_k": [0.0, 0.5, 0.7, 0.8, 0.9], "n_pool_min": 4})
    assert equivalent_k(0.6, curve) == (pytest.approx(1.5), "1.50")
    assert equivalent_k(0.5, curve)[0] == pytest.approx(1.0)
    assert equivalent_k(0.25, curve)[0] == pytest.approx(0.5)  # below k = 1: toward fast_1@0 = 0
    assert equivalent_k(0.0, curve) == (0.0, "0")
    k, text = equivalent_k(0.95, curve)
    assert math.isnan(k) and text == "> 4"


def test_equal_budget_compares_like_with_like():
    curve = pd.DataFrame({"k": [0, 1, 2, 3, 4, 5, 6], "fast_1_at_k": [0, .3, .5, .6, .7, .75, .8], "n_pool_min": 6})
    sel = pd.DataFrame([{"ttt_seed": 0, "rule": "boa_held_out", "rollouts_per_task": 6,
                         "task_success": 0.55, "fast_1_rate": 0.3}])
    row = equal_budget_table(sel, curve, base_rate=0.3).iloc[0]
    assert row["bon_task_success_at_budget"] == 0.8
    assert row["equivalent_k"] == pytest.approx(2.5)  # task success vs task success
    assert row["equivalent_k_paper_mixed"] == pytest.approx(1.0)  # per-sample rate vs task success
    assert row["per_sample_vs_base"] == pytest.approx(0.0)


def test_bon_pool_counts_no_sample_twice():
    batches = pd.DataFrame({"step": [0, 0, 0, 1], "task_id": ["a"] * 4, "seed": [0, 0, 100000, 0],
                            "sample_idx": [0, 0, 0, 0], "fast_1": [True, True, False, True]})
    base = pd.DataFrame({"task_id": ["a", "a", "b"], "seed": [0, 7, 7], "sample_idx": [0, 0, 0],
                         "fast_1": [True, False, True]})
    pool = bon_pool(batches, base, ["a"])
    # step-0 (seed 0, idx 0) once, (100000, 0), and the base seed-7 sample of task a; not base seed 0, not task b.
    assert sorted(zip(pool["seed"], pool["sample_idx"])) == [(0, 0), (7, 0), (100000, 0)]


# ---------------------------------------------------------------- probe statistics


def test_probe_rows_subsets_with_n_and_p():
    progs = pd.DataFrame({"task_id": ["a"] * 8, "code_sha256": [f"p{i}" for i in range(8)],
                          "nll_mean_code": np.arange(1.0, 9.0),
                          "speedup": [0.0, 0.0, 4.0, 3.5, 3.0, 2.0, 1.5, 1.0], "n_copies": 1})
    progs["correct"] = progs["speedup"] > 0
    rows = {r["subset"]: r for r in probe_rows(progs, "nll_mean_code", 50, np.random.default_rng(0))}
    assert rows["all"]["n_programs"] == 8 and rows["correct"]["n_programs"] == 6
    assert rows["correct"]["rho"] == pytest.approx(-1.0)
    # one task: a within-task permutation p exists, a task-clustered interval cannot
    assert rows["correct"]["p_within_task_permutation"] < 0.05 and math.isnan(rows["correct"]["rho_lo"])
    # slowest quartile of correct: speedups <= 25th percentile of [4, 3.5, 3, 2, 1.5, 1] = 1.625 -> {1.5, 1}: n = 2 < 3
    slow = rows["slowest_quartile_of_correct"]
    assert slow["slowest_quartile_cut"] == pytest.approx(1.625)
    assert slow["n_programs"] == 2 and math.isnan(slow["rho"]) and "fewer than 3" in slow["note"]
    assert rows["all"]["mean_nll"] == pytest.approx(4.5)


# ---------------------------------------------------------------- compute accounting


def test_compute_summary_counts_ttt_and_equal_rollout_best_of_n():
    compute = pd.DataFrame([
        {"method": "sample_train", "ttt_seed": 0, "step": 0, "rollouts": 8, "prompt_tokens": 800, "completion_tokens": 80,
         "training_tokens": 0, "wall_seconds": 10.0},
        {"method": "sample_heldout", "ttt_seed": 0, "step": 0, "rollouts": 8, "prompt_tokens": 800,
         "completion_tokens": 80, "training_tokens": 0, "wall_seconds": 10.0},
        {"method": "ttt_update", "ttt_seed": 0, "step": 1, "rollouts": 0, "prompt_tokens": 100, "completion_tokens": 0,
         "training_tokens": 80, "wall_seconds": 30.0},
        {"method": "sample_train", "ttt_seed": 0, "step": 1, "rollouts": 8, "prompt_tokens": 800, "completion_tokens": 90,
         "training_tokens": 0, "wall_seconds": 12.0},
    ])
    s = compute_summary(compute, n_tasks=2, k=4, n_steps=1).set_index("method")
    ttt = s.loc["ttt (train batches + updates)"]
    assert (ttt["rollouts"], ttt["completion_tokens"], ttt["training_tokens"], ttt["wall_seconds"]) == (16, 170, 80, 52.0)
    bon = s.loc["best_of_n (N = 8; step-0 cost x 2)"]
    assert (bon["rollouts"], bon["completion_tokens"], bon["wall_seconds"]) == (16, 160, 20.0)


# ---------------------------------------------------------------- plan keys


def _plan(**ttt):
    cfg = validate_config({"ttt": {"enabled": True, **ttt}})
    return build_plan(cfg, ["relu_where", "sigmoid_exp", "tanh_exp"], "model", None).ttt


def test_adding_a_seed_or_a_step_keeps_every_earlier_key():
    small = _plan(seeds=[0], steps=2)
    more = _plan(seeds=[0, 1], steps=3)
    for key, step in small.steps.items():
        assert more.steps[key].checkpoint_key == step.checkpoint_key
        assert more.steps[key].sample_key == step.sample_key
    new = set(more.checkpoints) - set(small.checkpoints)
    assert {(more.checkpoints[c].seed, more.checkpoints[c].step) for c in new} == {(0, 3), (1, 1), (1, 2), (1, 3)}
    assert small.steps[(0, 2)].previous_key == small.steps[(0, 1)].checkpoint_key
    assert _plan(seeds=[0], steps=2, learning_rate=0.001).steps[(0, 1)].checkpoint_key != small.steps[(0, 1)].checkpoint_key


def test_ttt_tasks_must_be_experiment_tasks_and_batches_rotate():
    with pytest.raises(ValueError, match="'ttt.tasks'.*no_such_task"):
        _plan(tasks=["no_such_task"])
    assert batch_tasks(["a", "b", "c"], 2, 1) == ["a", "b"]
    assert batch_tasks(["a", "b", "c"], 2, 2) == ["c", "a"]
    assert batch_tasks(["a", "b", "c"], None, 5) == ["a", "b", "c"]
    assert validate_config({})["ttt"]["enabled"] is False
    assert build_plan(validate_config({}), ["relu_where"], "model", None).ttt is None
