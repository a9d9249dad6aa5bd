"""Teacher-forced scorer: prompt-cache + chunked path vs the naive full-logits path, outputs, memory helper."""

from __future__ import annotations

import mmap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import PROMPT, CharTokenizer, samples_frame, tiny_model

from vegtts.analysis.merge import _apply_scores
from vegtts.analysis.surprisal import NLL_COLUMNS, TAIL_COLUMNS
from vegtts.io import read_parquet_metadata, write_parquet
from vegtts.peak_memory import measure_peak_rss
from vegtts.scoring import (
    completion_logprobs,
    naive_completion_logprobs,
    run_prompt,
    run_scoring,
    score_samples,
)

REPO = Path(__file__).resolve().parents[1]
ROWS = [[5, 6, 7, 8, 9, 10, 11, 12], [3], [40, 41, 42], [], [90, 2, 2, 2, 2]]


def test_cached_chunked_path_equals_full_logits_path():
    model = tiny_model()
    prompt_ids = CharTokenizer()(PROMPT)["input_ids"]
    rows = [r for r in ROWS if r]
    with torch.no_grad():
        lp, mask = completion_logprobs(model, run_prompt(model, prompt_ids), rows, logit_chunk=3)
        ref, ref_mask = naive_completion_logprobs(model, prompt_ids, rows)
    assert torch.equal(mask, ref_mask)
    assert torch.allclose(lp, ref, atol=1e-5), (lp - ref).abs().max()
    assert lp[mask].lt(0).all() and (lp[~mask] == 0).all()


def test_score_samples_matches_naive_and_does_not_depend_on_micro_batch():
    model, tok = tiny_model(), CharTokenizer()
    df = samples_frame(ROWS)
    a = score_samples(model, tok, PROMPT, df, micro_batch=1, scorer="base")
    b = score_samples(model, tok, PROMPT, df, micro_batch=4, scorer="base")
    with torch.no_grad():
        ref, mask = naive_completion_logprobs(model, tok(PROMPT)["input_ids"], [r for r in ROWS if r])
    want = [ref[i][mask[i]].tolist() for i in range(len(ref))]
    got = [lp for lp in a["token_logprobs"] if len(lp)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
    for x, y in zip(a["token_logprobs"], b["token_logprobs"]):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert [len(t) for t in a["token_logprobs"]] == [len(r) for r in ROWS]  # empty completion: empty list
    assert a["sample_idx"].tolist() == list(range(len(ROWS)))  # input order is kept
    # the surprisal columns are the sampled ones' definitions applied to the scored log-probs
    first = np.asarray(a["token_logprobs"][0])
    assert a["nll_sum_all"][0] == pytest.approx(-first.sum())
    assert a["nll_mean_code"][0] == pytest.approx(-first[1:7].mean())
    assert np.isnan(a["nll_mean_all"][3]) and a["n_tokens"][3] == 0
    assert set(a["scorer"]) == {"base"}


def test_score_columns_are_what_the_analysis_merge_takes():
    model, tok = tiny_model(), CharTokenizer()
    df = samples_frame(ROWS)
    scores = score_samples(model, tok, PROMPT, df, micro_batch=2, scorer="ttt-seed0-step1")
    assert set(NLL_COLUMNS) | set(TAIL_COLUMNS) | {"n_tokens", "n_code_tokens"} <= set(scores.columns)
    merged = df.assign(**{c: 99.0 for c in NLL_COLUMNS + TAIL_COLUMNS}, n_tokens=0, n_code_tokens=0)
    out = _apply_scores(merged.drop(columns=["token_ids"]), scores)
    np.testing.assert_allclose(out["nll_sum_all"].to_numpy(), scores["nll_sum_all"].to_numpy())
    assert out["n_tokens"].tolist() == [len(r) for r in ROWS]


def test_scorer_rejects_samples_of_another_prompt():
    model, tok = tiny_model(), CharTokenizer()
    df = samples_frame(ROWS, prompt="other prompt")
    with pytest.raises(ValueError, match="another prompt"):
        score_samples(model, tok, PROMPT, df)


@pytest.mark.needs_package("peft", "ttt")
def test_a_lora_policy_scores_differently_and_its_scorer_matches_its_full_path():
    from vegtts.ttt import make_lora_model

    tok = CharTokenizer()
    lora = make_lora_model(tiny_model(), rank=2, alpha=4, target_modules=["q_proj", "v_proj", "o_proj"], seed=1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    df = samples_frame(ROWS)
    adapted = score_samples(lora, tok, PROMPT, df, micro_batch=2, scorer="lora")
    with torch.no_grad():
        ref, mask = naive_completion_logprobs(lora, tok(PROMPT)["input_ids"], [r for r in ROWS if r])
        with lora.disable_adapter():
            base = score_samples(lora, tok, PROMPT, df, micro_batch=2, scorer="base")
    got = [lp for lp in adapted["token_logprobs"] if len(lp)]
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, ref[i][mask[i]].tolist(), atol=1e-5)
    assert not np.allclose(adapted["nll_sum_all"].dropna(), base["nll_sum_all"].dropna(), atol=1e-3)


def test_run_scoring_writes_parquet_with_metadata(tmp_path):
    model, tok = tiny_model(), CharTokenizer()
    paths = []
    for task, prompt in (("t1", PROMPT), ("t2", "y = x * 2\n")):
        p = tmp_path / f"{task}.parquet"
        write_parquet(p, samples_frame(ROWS[:3], prompt=prompt, task_id=task), metadata={"prompt": prompt})
        paths.append(p)
    out = run_scoring(paths, "unused-model-path", None, "base", tmp_path / "scores.parquet", micro_batch=2,
                      model_and_tokenizer=(model, tok))
    scores = pd.read_parquet(out)
    meta = read_parquet_metadata(out)
    assert len(scores) == 6 and set(scores["task_id"]) == {"t1", "t2"}
    assert meta["scorer"] == "base" and meta["n_samples"] == 6 and meta["micro_batch"] == 2
    assert meta["n_scored_tokens"] == 2 * sum(len(r) for r in ROWS[:3])
    assert "provenance" in meta and not list(tmp_path.glob(".*tmp"))
    # each task was scored against its own prompt
    single = score_samples(model, tok, "y = x * 2\n", samples_frame(ROWS[:3], prompt="y = x * 2\n", task_id="t2"))
    t2 = scores[scores["task_id"] == "t2"].reset_index(drop=True)
    np.testing.assert_allclose(t2["nll_sum_all"], single["nll_sum_all"], atol=1e-6)


def test_run_scoring_needs_the_prompt_in_metadata(tmp_path):
    p = tmp_path / "s.parquet"
    write_parquet(p, samples_frame(ROWS[:2]), metadata={"task_id": "t"})
    with pytest.raises(ValueError, match="prompt"):
        run_scoring(p, "x", None, "base", tmp_path / "o.parquet", model_and_tokenizer=(tiny_model(), CharTokenizer()))


def _touched_pages(mib: int) -> mmap.mmap:
    """Fresh anonymous pages, each written once (an allocator could hand back pages that are
    already resident, which no RSS measure can see)."""
    import mmap

    block = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


def _skip_unless_rss_shows_allocations() -> None:
    """Some sandboxes (CI's among them) report a VmRSS that a touched 256 MiB allocation leaves
    unchanged; there no method can see the peak, so these tests have nothing to check."""
    from vegtts.peak_memory import _read_status_kb

    before = _read_status_kb("VmRSS")
    if before is None:
        pytest.skip("no /proc/self/status here")
    block = _touched_pages(256)
    grown_mb = ((_read_status_kb("VmRSS") or 0) - before) / 1024
    block.close()
    if grown_mb < 200:
        pytest.skip(f"this kernel's VmRSS grew {grown_mb:.0f} MB for 256 MiB of touched pages")


def test_peak_rss_sees_a_large_allocation_and_resets_between_blocks():
    _skip_unless_rss_shows_allocations()
    with measure_peak_rss() as big:
        x = _touched_pages(256)
        time.sleep(0.1)  # long enough for the VmRSS poller where the kernel's mark is lazy
        x.close()
    with measure_peak_rss() as small:
        y = torch.ones(1024)
        del y
    assert big.delta_mb > 200, big
    if "reset" in big.method:  # the kernel's high-water mark was reset between the blocks
        assert small.delta_mb < 100, small


def test_peak_rss_nests_an_inner_reset_does_not_hide_the_outer_peak():
    _skip_unless_rss_shows_allocations()
    with measure_peak_rss() as outer:
        x = _touched_pages(256)  # before the inner block
        time.sleep(0.1)
        x.close()
        with measure_peak_rss() as inner:
            y = torch.ones(1024)
            del y
    assert outer.delta_mb > 200, outer
    if "reset" in inner.method:
        assert inner.delta_mb < 100, inner


# ---------------------------------------------------------------- the real model (slow)


def _real_model_dir() -> Path:
    """The default model, prepared into the checkout's resources/ on first use (~1 min), as the workflow does."""
    from vegtts.models import prepare_default_model

    return prepare_default_model(REPO / "resources" / "models" / "gemma3-270m-gguf")


@pytest.mark.slow
def test_scorer_agrees_with_the_samplers_own_logprobs_for_the_base_policy():
    from vegtts.models import load_model_and_tokenizer
    from vegtts.records import to_row
    from vegtts.sampling.prompts import build_prompt
    from vegtts.sampling.transformers_backend import SamplerSettings, sample_task
    from vegtts.tasks import load_tasks

    model, tok = load_model_and_tokenizer(_real_model_dir())
    spec = load_tasks({"suite": "builtin", "ids": ["relu_where"]})[0]
    prompt = build_prompt(spec, "body", "completion", 5)  # ~650 tokens: beyond the 512-token sliding window
    settings = SamplerSettings(k=4, temperature=1.0, top_p=1.0, max_new_tokens=24, batch_size=4, n_shots=5)
    records = sample_task(model, tok, spec, prompt, settings, seed=5)
    df = pd.DataFrame([to_row(r) for r in records])
    assert df["n_tokens"].nunique() > 1 or df["n_tokens"].iloc[0] > 1
    scores = score_samples(model, tok, prompt, df, micro_batch=3)
    for sampled, scored in zip(df["token_logprobs"], scores["token_logprobs"]):
        assert len(sampled) == len(scored)
        np.testing.assert_allclose(scored, sampled, atol=1e-4)
    np.testing.assert_allclose(
        scores["nll_mean_all"], [-np.mean(lp) for lp in df["token_logprobs"]], atol=1e-4
    )
