"""TTT objectives on hand-computed examples; the LoRA step's gradient against the naive full path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import PROMPT, CharTokenizer, samples_frame, tiny_model

from vegtts.scoring import naive_completion_logprobs
from vegtts.ttt import (
    TTTSettings,
    load_lora_model,
    load_optimizer_state,
    load_ttt_state,
    lora_parameters,
    make_lora_model,
    make_optimizer,
    save_adapter,
    ttt_step,
)
from vegtts.ttt_objectives import (
    evaluation_order,
    grpo_advantages,
    paper_advantages,
    paper_rewards,
    policy_gradient_loss,
)

# ---------------------------------------------------------------- objectives, by hand


def test_paper_rewards_hand_example():
    # task a: 2.0 (median of nothing = 1 -> 2.0), 1.0 (median [2] = 2 -> 0.5), 4.0 (median [2, 1] = 1.5 -> 2.667)
    # task b: incorrect -> 0 and not in the history; 0.5 (no history -> 0.5); the last one is incorrect -> 0
    rewards, hist = paper_rewards(
        speedups=[2.0, 1.0, 5.0, 4.0, 0.5, 3.0],
        correct=[True, True, False, True, True, False],
        task_ids=["a", "a", "b", "a", "b", "a"],
        history=None,
    )
    np.testing.assert_allclose(rewards, [2.0, 0.5, 0.0, 4.0 / 1.5, 0.5, 0.0])
    assert hist == {"a": [2.0, 1.0, 4.0], "b": [0.5]}


def test_paper_rewards_window_and_carried_history():
    old = {"a": [10.0, 1.0, 3.0]}
    # window 2: the median of the last two correct speedups [1, 3] is 2 -> 4 / 2 = 2; then [3, 4]: 3.5 -> 7 / 3.5
    rewards, hist = paper_rewards([4.0, 7.0], [True, True], ["a", "a"], history=old, window=2)
    np.testing.assert_allclose(rewards, [2.0, 2.0])
    assert hist == {"a": [4.0, 7.0]}
    assert old == {"a": [10.0, 1.0, 3.0]}  # the caller's history is not modified


def test_paper_rewards_floor_on_a_zero_median():
    rewards, _ = paper_rewards([0.0, 2.0], [True, True], ["a", "a"])
    assert rewards[1] == pytest.approx(2.0 / 1e-6)


def test_evaluation_order_is_task_then_seed_then_sample():
    df = pd.DataFrame({"task_id": ["b", "a", "a", "b"], "seed": [0, 0, 0, 0], "sample_idx": [0, 1, 0, 1]})
    ordered = evaluation_order(df)
    assert list(zip(ordered["task_id"], ordered["sample_idx"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_paper_advantages_hand_example():
    # mean 1, deviations -1 -1 2 0, population variance 6/4 = 1.5, std 1.22474
    np.testing.assert_allclose(paper_advantages([0, 0, 3, 1]), [-0.816497, -0.816497, 1.632993, 0.0], atol=1e-6)
    np.testing.assert_allclose(paper_advantages([1, 3]), [-1.0, 1.0])
    np.testing.assert_allclose(paper_advantages([2, 2]), [0.0, 0.0])  # std floor, no division by zero


def test_grpo_advantages_hand_example():
    rewards, tasks = [1, 3, 0, 4, 2], ["a", "a", "b", "b", "b"]  # group means: a 2, b 2
    np.testing.assert_allclose(grpo_advantages(rewards, tasks), [-1, 1, -2, 2, 0])
    # with std: a has std 1; b has population std sqrt(8/3) = 1.632993
    np.testing.assert_allclose(
        grpo_advantages(rewards, tasks, normalize_std=True), [-1, 1, -1.224745, 1.224745, 0], atol=1e-6
    )
    # unlike the paper's global z-score, a task where all samples tie gets zero advantage
    np.testing.assert_allclose(grpo_advantages([5, 5, 0, 1], ["a", "a", "b", "b"]), [0, 0, -0.5, 0.5])


def test_policy_gradient_loss_hand_example_and_micro_batch_additivity():
    lp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    adv = [2.0, -1.0]
    # sum A * lp = 2 * (-3) + (-1) * (-2) = -4 over 5 tokens -> loss = 4 / 5
    loss = policy_gradient_loss(lp, adv, mask)
    assert float(loss) == pytest.approx(0.8)
    loss.backward()
    np.testing.assert_allclose(lp.grad.numpy(), [[-0.4, -0.4, 0.0], [0.2, 0.2, 0.2]])
    # micro-batches with the batch's token count as normaliser add up to the batch loss
    parts = [policy_gradient_loss(lp[i : i + 1], adv[i : i + 1], mask[i : i + 1], normalizer=5) for i in (0, 1)]
    assert [float(p) for p in parts] == pytest.approx([1.2, -0.4])
    assert float(sum(parts)) == pytest.approx(0.8)


# ---------------------------------------------------------------- the step on a tiny model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"]
ROWS = [[5, 6, 7, 8, 9, 10], [3, 4], [40, 41, 42], [11, 12, 13, 14], [7]]
ROWS_B = [[20, 21, 22], [30, 31], [60, 61, 62, 63, 64]]
PROMPT_B = "y = torch.relu(x)\n"


def _batch():
    sa, sb = samples_frame(ROWS, task_id="a"), samples_frame(ROWS_B, prompt=PROMPT_B, task_id="b")
    samples = pd.concat([sa, sb], ignore_index=True)
    ev = samples[["task_id", "policy", "seed", "sample_idx"]].copy()
    ev["correct"] = [True, True, False, True, True, False, True, True]
    ev["speedup"] = [2.0, 1.0, 0.0, 4.0, 0.5, 0.0, 1.5, 3.0]
    return samples, ev, {"a": PROMPT, "b": PROMPT_B}


def _lora(seed=0):
    model = make_lora_model(tiny_model(), rank=2, alpha=4, target_modules=TARGETS, seed=seed)
    with torch.no_grad():  # B = 0 at init would make the gradient of A vanish; perturb it
        gen = torch.Generator().manual_seed(7)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _naive_grads(model, samples, ev, prompts, objective="paper"):
    """Reference: full sequences through the full model, one batch, autograd."""
    from vegtts.ttt import compute_advantages, join_evaluations

    s = TTTSettings(objective=objective)
    batch = evaluation_order(join_evaluations(samples, ev)).reset_index(drop=True)
    _, adv, _ = compute_advantages(batch, objective, None, s)
    n_tokens = sum(len(r) for r in batch["token_ids"])
    model.zero_grad(set_to_none=True)
    total = 0.0
    tok = CharTokenizer()
    for task, idx in batch.groupby("task_id").groups.items():
        idx = list(idx)
        lp, mask = naive_completion_logprobs(model, tok(prompts[task])["input_ids"], [list(batch["token_ids"][i]) for i in idx])
        loss = policy_gradient_loss(lp, adv[idx], mask, normalizer=n_tokens)
        loss.backward()
        total += float(loss)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads, total


def _sgd_step_grads(model, samples, ev, prompts, **settings):
    """Run ttt_step with plain SGD(lr=1): the parameter change is minus the gradient."""
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(lora_parameters(model), lr=1.0)
    stats = ttt_step(model, CharTokenizer(), prompts, samples, ev, settings, optimizer=opt, progress=False)
    grads = {n: before[n] - p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return grads, stats


@pytest.mark.needs_package("peft", "ttt")
@pytest.mark.parametrize("objective", ["paper", "grpo"])
def test_step_gradient_is_exact_through_the_prompt_cache(objective):
    samples, ev, prompts = _batch()
    want, want_loss = _naive_grads(_lora(), samples, ev, prompts, objective)
    got, stats = _sgd_step_grads(_lora(), samples, ev, prompts, objective=objective, micro_batch=2, logit_chunk=3)
    assert stats["loss"] == pytest.approx(want_loss, rel=1e-5, abs=1e-7)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-6, rtol=1e-4)
    assert any(float(g.abs().max()) > 1e-4 for g in want.values())  # the comparison is not between zeros


@pytest.mark.needs_package("peft", "ttt")
def test_detached_prompt_drops_the_prompt_gradient_only():
    samples, ev, prompts = _batch()
    exact, _ = _sgd_step_grads(_lora(), samples, ev, prompts, micro_batch=3)
    detached, stats = _sgd_step_grads(_lora(), samples, ev, prompts, micro_batch=3, detach_prompt=True)
    assert stats["detach_prompt"] is True
    diffs = [float((exact[n] - detached[n]).abs().max()) for n in exact]
    assert max(diffs) > 1e-5  # LoRA moves the prompt's keys/values: the prompt's share is real
    # the completions alone still give every lora_B a gradient
    assert all(float(g.abs().max()) > 0 for n, g in detached.items() if "lora_B" in n)


@pytest.mark.needs_package("peft", "ttt")
def test_micro_batch_size_does_not_change_the_update():
    samples, ev, prompts = _batch()
    g1, s1 = _sgd_step_grads(_lora(), samples, ev, prompts, micro_batch=1)
    g4, s4 = _sgd_step_grads(_lora(), samples, ev, prompts, micro_batch=4, logit_chunk=2)
    for n in g1:
        torch.testing.assert_close(g1[n], g4[n], atol=2e-6, rtol=1e-4)
    assert s1["n_train_tokens"] == s4["n_train_tokens"] == sum(map(len, ROWS + ROWS_B))


@pytest.mark.needs_package("peft", "ttt")
def test_step_stats_history_and_adamw_move_only_lora_weights():
    samples, ev, prompts = _batch()
    model = _lora()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    stats = ttt_step(model, CharTokenizer(), prompts, samples, ev, {"learning_rate": 1e-3, "micro_batch": 2}, progress=False)
    for key in ("n_samples", "n_train_tokens", "n_prompt_tokens", "loss", "grad_norm", "wall_seconds", "peak_rss_mb"):
        assert key in stats
    assert stats["n_samples"] == 8 and stats["n_tasks"] == 2 and stats["n_correct"] == 6
    assert stats["n_prompt_tokens"] == CharTokenizer()(PROMPT)["input_ids"].shape[1] + CharTokenizer()(PROMPT_B)["input_ids"].shape[1]
    assert stats["history"] == {"a": [2.0, 1.0, 4.0, 0.5], "b": [1.5, 3.0]}
    assert stats["grad_norm"] > 0 and stats["peak_rss_mb"] > 0
    for n, p in model.named_parameters():
        if p.requires_grad:
            # AdamW's first step moves every weight with a non-zero gradient by ~lr
            assert float((p - lora_before[n]).abs().max()) == pytest.approx(1e-3, rel=0.05)
        else:
            assert torch.equal(p, frozen[n])


@pytest.mark.needs_package("peft", "ttt")
def test_zero_advantage_samples_are_not_run_but_count_in_the_normaliser():
    samples, ev, prompts = _batch()
    ev = ev.copy()
    ev.loc[ev["task_id"] == "b", "correct"] = False  # task b: all rewards 0 -> GRPO advantage 0
    _, stats = _sgd_step_grads(_lora(), samples, ev, prompts, objective="grpo")
    assert stats["n_samples_trained"] == len(ROWS)
    assert stats["n_completion_tokens"] == sum(map(len, ROWS + ROWS_B))


@pytest.mark.needs_package("peft", "ttt")
def test_missing_evaluation_or_prompt_is_an_error():
    samples, ev, prompts = _batch()
    with pytest.raises(ValueError, match="no evaluation"):
        ttt_step(_lora(), CharTokenizer(), prompts, samples, ev.iloc[1:], {}, progress=False)
    with pytest.raises(ValueError, match="no prompt"):
        ttt_step(_lora(), CharTokenizer(), {"a": PROMPT}, samples, ev, {}, progress=False)
    with pytest.raises(ValueError, match="unknown ttt settings"):
        TTTSettings.from_dict({"lr": 1})


@pytest.mark.needs_package("peft", "ttt")
def test_lora_init_is_seeded_and_starts_at_the_base_model():
    a, b, c = (make_lora_model(tiny_model(), 2, 4, TARGETS, seed=s) for s in (3, 3, 4))
    pa, pb, pc = ({n: p for n, p in m.named_parameters() if "lora_A" in n} for m in (a, b, c))
    assert all(torch.equal(pa[n], pb[n]) for n in pa) and not all(torch.equal(pa[n], pc[n]) for n in pa)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(a(input_ids=ids).logits, tiny_model()(input_ids=ids).logits)


@pytest.mark.needs_package("peft", "ttt")
def test_save_adapter_is_atomic_and_round_trips(tmp_path):
    samples, ev, prompts = _batch()
    model = _lora()
    opt = make_optimizer(model, {"learning_rate": 1e-3})
    stats = ttt_step(model, CharTokenizer(), prompts, samples, ev, {"learning_rate": 1e-3}, optimizer=opt, progress=False)
    target = tmp_path / "seed0" / "step1"
    save_adapter(model, target, optimizer=opt, state={"history": stats["history"], "step": 1})
    save_adapter(model, target, optimizer=opt, state={"history": stats["history"], "step": 1})  # replace in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["step1"]  # no temporary folders left
    assert (target / "adapter_config.json").exists() and load_ttt_state(target)["step"] == 1
    reloaded = load_lora_model(tiny_model(), target)
    want = {n: p for n, p in model.named_parameters() if "lora_" in n}
    got = {n: p for n, p in reloaded.named_parameters() if "lora_" in n}
    assert want.keys() == got.keys() and all(torch.equal(want[n], got[n]) for n in want)
    opt2 = make_optimizer(reloaded, {"learning_rate": 1e-3})
    assert load_optimizer_state(opt2, target)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)
    assert json.loads((target / "vegtts_ttt_state.json").read_text())["history"]["b"] == [1.5, 3.0]


def _write_step_inputs(tmp_path, tag):
    from vegtts.io import write_parquet

    samples, ev, prompts = _batch()
    sp, ep = [], []
    for task in ("a", "b"):
        s_path, e_path = tmp_path / f"{tag}-{task}-samples.parquet", tmp_path / f"{tag}-{task}-evals.parquet"
        write_parquet(s_path, samples[samples["task_id"] == task], metadata={"prompt": prompts[task], "task_id": task})
        write_parquet(e_path, ev[ev["task_id"] == task])
        sp.append(s_path)
        ep.append(e_path)
    return sp, ep


@pytest.mark.needs_package("peft", "ttt")
def test_run_ttt_update_chains_steps_and_is_deterministic(tmp_path):
    from vegtts.ttt import run_ttt_update

    sp, ep = _write_step_inputs(tmp_path, "s0")
    settings = {"rank": 2, "alpha": 4, "target_modules": TARGETS, "learning_rate": 1e-2, "seed": 3, "micro_batch": 2}
    tok = CharTokenizer()
    one = run_ttt_update(sp, ep, "m", tmp_path / "step1", settings, model_and_tokenizer=(tiny_model(), tok))
    again = run_ttt_update(sp, ep, "m", tmp_path / "step1-again", settings, model_and_tokenizer=(tiny_model(), tok))
    from safetensors.torch import load_file

    w1, w1b = load_file(one / "adapter_model.safetensors"), load_file(again / "adapter_model.safetensors")
    assert w1.keys() == w1b.keys() and all(torch.equal(w1[k], w1b[k]) for k in w1)
    assert any(float(w1[k].abs().max()) > 0 for k in w1 if "lora_B" in k)  # the step moved B away from 0
    st1 = load_ttt_state(one)
    assert st1["step"] == 1 and st1["history"] == {"a": [2.0, 1.0, 4.0, 0.5], "b": [1.5, 3.0]}
    assert st1["stats"]["n_train_tokens"] > 0 and "wall_seconds" in st1["stats"]
    # step 2 continues the adapter, its AdamW moments and the reward history
    two = run_ttt_update(sp, ep, "m", tmp_path / "step2", settings, previous_adapter=one, step=2,
                         model_and_tokenizer=(tiny_model(), tok))
    st2 = load_ttt_state(two)
    assert st2["step"] == 2 and st2["history"]["a"] == [2.0, 1.0, 4.0, 0.5, 2.0, 1.0, 4.0, 0.5]
    w2 = load_file(two / "adapter_model.safetensors")
    assert not all(torch.equal(w1[k], w2[k]) for k in w1)
    with pytest.raises(ValueError, match="previous adapter"):
        run_ttt_update(sp, ep, "m", tmp_path / "x", settings, step=2, model_and_tokenizer=(tiny_model(), tok))
    with pytest.raises(ValueError, match="rank"):
        run_ttt_update(sp, ep, "m", tmp_path / "x", {**settings, "rank": 4}, previous_adapter=one, step=2,
                       model_and_tokenizer=(tiny_model(), tok))
