"""Teacher-forced scoring: log-probabilities of stored completions under any policy.

A policy is the base model or the base model with a LoRA adapter (a TTT checkpoint).  The
scorer reproduces the sampler's `token_logprobs` (log_softmax of the raw logits, no
temperature) for the base policy, and gives the same quantity under any other policy, so the
over-sharpening probe can ask how a checkpoint rates a fixed set of samples.

Memory.  The default model has a 262k-token vocabulary: full logits of one 700-token sequence
take 0.7 GB (float32), and the naive [batch, seq, vocab] tensor of a batch of them does not
fit in memory.  So:
- the prompt, shared by all samples of a task, runs once (batch 1); its KV cache is expanded
  (a view, no copy) over the rows of each micro-batch;
- only completion tokens run through the decoder, right-padded (pads come after every real
  token, so causal attention never lets a real token see one and no mask is needed);
- logits are formed only at the positions that predict a completion token, a chunk of
  positions at a time, and reduced at once to (target logit - logsumexp).  With gradients,
  each chunk is checkpointed, so the backward pass recomputes its logits instead of keeping
  them: the peak stays at one chunk of logits whatever the batch.

`completion_logprobs` is shared with `vegtts.ttt`, which runs it with gradients.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vegtts.analysis.surprisal import surprisal_from_logprobs
from vegtts.io import provenance, read_parquet_metadata, write_parquet

log = logging.getLogger(__name__)

KEYS = ["task_id", "policy", "seed", "sample_idx"]
DEFAULT_LOGIT_CHUNK = 256  # positions per lm_head chunk: 256 x 262k x 4 B = 268 MB of logits


# ---------------------------------------------------------------- model plumbing


def causal_lm(model: Any) -> Any:
    """The transformers CausalLM inside a PEFT wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder(model: Any) -> Any:
    lm = causal_lm(model)
    return lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model


def logits_from_hidden(model: Any, hidden: Any) -> Any:
    """The model's own head on final hidden states, including Gemma-style final softcapping."""
    import torch

    lm = causal_lm(model)
    logits = lm.get_output_embeddings()(hidden).to(torch.float32)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _target_logprobs(model: Any, hidden: Any, targets: Any) -> Any:
    import torch

    logits = logits_from_hidden(model, hidden)
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def chunked_target_logprobs(model: Any, hidden: Any, targets: Any, chunk: int = DEFAULT_LOGIT_CHUNK) -> Any:
    """log p(targets[i] | hidden[i]) for hidden [N, H], targets [N], `chunk` positions at a time.

    With gradients enabled each chunk is checkpointed: the backward pass recomputes the chunk's
    logits rather than storing N x vocab of them.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_target_logprobs, model, h, t, use_reentrant=False))
        else:
            parts.append(_target_logprobs(model, h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0)


@dataclass
class PromptState:
    """The prompt's forward pass, computed once per task and shared by all its samples.

    `leaves` are what the completion passes read: the per-layer key/value tensors of the
    prompt's cache and the final hidden state of its last position (which predicts the first
    completion token).  With `track_grad`, the leaves are detached tensors that require grad
    and `graph` holds the same tensors still attached to the prompt's autograd graph:
    `backward_through_prompt` then carries the gradients gathered on the leaves (summed over
    all micro-batches) through the prompt in one pass, which gives the exact gradient while
    holding only one copy of the prompt's graph.
    """

    cache: Any  # the prompt's cache object, its tensors replaced by the leaves
    leaves: list[Any]  # [k_0, v_0, k_1, v_1, ..., last_hidden]
    graph: list[Any] = field(default_factory=list)  # the attached originals (track_grad only)
    n_prompt_tokens: int = 0

    @property
    def last_hidden(self) -> Any:
        return self.leaves[-1]


def encode_prompt_ids(tokenizer: Any, prompt: str, device: Any = "cpu") -> Any:
    from vegtts.sampling.transformers_backend import encode_prompt

    return encode_prompt(tokenizer, prompt).to(device)


def run_prompt(model: Any, prompt_ids: Any, track_grad: bool = False) -> PromptState:
    """Forward the prompt (shape [1, L]) once and keep what the completions need."""
    import torch

    decoder = _decoder(model)
    with torch.set_grad_enabled(track_grad):
        out = decoder(input_ids=prompt_ids, use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    graph: list[Any] = []
    for layer in cache.layers:
        graph += [layer.keys, layer.values]
    graph.append(out.last_hidden_state[:, -1])
    if track_grad:
        leaves = [t.detach().requires_grad_(True) for t in graph]
    else:
        leaves, graph = [t.detach() for t in graph], []
    for i, layer in enumerate(cache.layers):
        layer.keys, layer.values = leaves[2 * i], leaves[2 * i + 1]
    return PromptState(cache=cache, leaves=leaves, graph=graph, n_prompt_tokens=int(prompt_ids.shape[1]))


def _expanded_cache(state: PromptState, n_rows: int) -> Any:
    """A fresh cache object whose tensors are the prompt leaves expanded (views) to n_rows."""
    cache = copy.copy(state.cache)
    cache.layers = []
    for i, layer in enumerate(state.cache.layers):
        new = copy.copy(layer)
        new.keys = state.leaves[2 * i].expand(n_rows, -1, -1, -1)
        new.values = state.leaves[2 * i + 1].expand(n_rows, -1, -1, -1)
        cache.layers.append(new)
    return cache


def backward_through_prompt(state: PromptState) -> None:
    """Carry the gradients accumulated on the prompt leaves back through the prompt's graph."""
    import torch

    pairs = [(g, leaf.grad) for g, leaf in zip(state.graph, state.leaves) if leaf.grad is not None]
    if pairs:
        torch.autograd.backward([g for g, _ in pairs], grad_tensors=[d for _, d in pairs])
    for leaf in state.leaves:
        leaf.grad = None


def completion_logprobs(
    model: Any,
    state: PromptState,
    rows: Sequence[Sequence[int]],
    logit_chunk: int = DEFAULT_LOGIT_CHUNK,
) -> tuple[Any, Any]:
    """Teacher-forced log p of each row's tokens after the prompt.

    Returns (logprobs [B, T], mask [B, T]) with T the longest row; padded positions hold 0 and
    mask False.  Differentiable when grad is enabled (w.r.t. LoRA parameters, and w.r.t. the
    prompt leaves when the state tracks gradients).
    """
    import torch

    n_rows = len(rows)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if n_rows else 0
    device = state.last_hidden.device
    mask = torch.arange(width)[None, :] < lengths[:, None]
    if width == 0:
        return torch.zeros(n_rows, 0, device=device), mask.to(device)
    tokens = torch.zeros(n_rows, width, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    tokens, mask = tokens.to(device), mask.to(device)
    # position j is predicted by the hidden state after token j-1 (j=0: the prompt's last one)
    predictors = [state.last_hidden[:, None, :].expand(n_rows, 1, -1)]
    if width > 1:
        out = _decoder(model)(input_ids=tokens[:, :-1], cache=_expanded_cache(state, n_rows), use_cache=True)
        predictors.append(out.last_hidden_state)
    hidden = torch.cat(predictors, dim=1)  # [B, T, H]
    flat = chunked_target_logprobs(model, hidden[mask], tokens[mask], logit_chunk)
    logprobs = torch.zeros(n_rows, width, dtype=flat.dtype, device=device)
    logprobs = logprobs.masked_scatter(mask, flat)
    return logprobs, mask


def naive_completion_logprobs(model: Any, prompt_ids: Any, rows: Sequence[Sequence[int]]) -> tuple[Any, Any]:
    """Reference path without any memory saving: the whole sequence (prompt + completion) of
    every row through the full model, full [B, L+T, vocab] logits, log_softmax everywhere.
    Used by tests and the benchmark only."""
    import torch

    n_rows, n_prompt = len(rows), int(prompt_ids.shape[1])
    width = max((len(r) for r in rows), default=0)
    ids = prompt_ids.expand(n_rows, -1).clone()
    pad = torch.zeros(n_rows, width, dtype=torch.long, device=ids.device)
    mask = torch.zeros(n_rows, width, dtype=torch.bool, device=ids.device)
    for i, r in enumerate(rows):
        pad[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = True
    full = torch.cat([ids, pad], dim=1)
    logits = model(input_ids=full, use_cache=False).logits.to(torch.float32)
    logp = torch.log_softmax(logits, dim=-1)[:, n_prompt - 1 : -1]
    return logp.gather(2, pad[:, :, None]).squeeze(2) * mask, mask


# ---------------------------------------------------------------- scoring


def _micro_batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


def score_samples(
    model: Any,
    tokenizer: Any,
    prompt: str,
    samples_df: pd.DataFrame,
    micro_batch: int = 8,
    scorer: str = "base",
    logit_chunk: int = DEFAULT_LOGIT_CHUNK,
    progress: Any = None,
) -> pd.DataFrame:
    """Teacher-forced log-probs of the stored completions of ONE prompt under `model`.

    `samples_df` holds sample rows (vegtts.records.SampleRecord columns; at least the keys,
    token_ids, code_token_start, code_token_end) that were all sampled from `prompt`.
    Returns one row per sample: the keys (task_id, policy, seed, sample_idx: the *sampling*
    policy), `scorer` (the scoring policy), token_logprobs (raw: no temperature), the code span,
    the four NLL variants with token counts and the tail variants (`surprisal_from_logprobs`).
    Samples are scored longest first, `micro_batch` at a time, so padding stays small.
    """
    import torch

    if micro_batch < 1:
        raise ValueError("micro_batch must be >= 1")
    rows = [list(map(int, t)) for t in samples_df["token_ids"]]
    device = next(causal_lm(model).parameters()).device
    prompt_ids = encode_prompt_ids(tokenizer, prompt, device)
    check_samples_prompt(samples_df, prompt, int(prompt_ids.shape[1]))
    logprobs: list[list[float]] = [[] for _ in rows]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    was_training = causal_lm(model).training
    causal_lm(model).eval()
    try:
        with torch.inference_mode():
            state = run_prompt(model, prompt_ids, track_grad=False)
            for batch in _micro_batches([i for i in order if rows[i]], micro_batch):
                lp, mask = completion_logprobs(model, state, [rows[i] for i in batch], logit_chunk)
                for j, i in enumerate(batch):
                    logprobs[i] = lp[j, mask[j]].tolist()
                if progress is not None:
                    progress.update(len(batch))
    finally:
        causal_lm(model).train(was_training)
    return scores_frame(samples_df, scorer, logprobs)


def check_samples_prompt(samples_df: pd.DataFrame, prompt: str, n_prompt_tokens: int) -> None:
    """Refuse samples that were drawn from another prompt (text or tokenization)."""
    from vegtts.sampling.prompts import prompt_sha

    if "prompt_sha" in samples_df and len(samples_df):
        shas = set(samples_df["prompt_sha"])
        if shas != {prompt_sha(prompt)}:
            raise ValueError(f"samples were drawn from another prompt: prompt_sha {sorted(shas)} != {prompt_sha(prompt)}")
    if "n_prompt_tokens" in samples_df and len(samples_df):
        stored = set(int(n) for n in samples_df["n_prompt_tokens"])
        if stored != {int(n_prompt_tokens)}:
            raise ValueError(f"prompt encodes to {n_prompt_tokens} tokens, samples say {sorted(stored)}")


def scores_frame(samples_df: pd.DataFrame, scorer: str, logprobs: Sequence[Sequence[float]]) -> pd.DataFrame:
    """One row per sample: keys, scorer, teacher-forced token log-probs, code span and the surprisal variants."""
    out = samples_df[KEYS].reset_index(drop=True).copy()
    out["scorer"] = scorer
    out["token_logprobs"] = [list(lp) for lp in logprobs]
    out["code_token_start"] = samples_df["code_token_start"].astype(int).to_numpy()
    out["code_token_end"] = samples_df["code_token_end"].astype(int).to_numpy()
    surprisal = [
        surprisal_from_logprobs(lp, s, e).to_dict()
        for lp, s, e in zip(out["token_logprobs"], out["code_token_start"], out["code_token_end"])
    ]
    return pd.concat([out, pd.DataFrame(surprisal, index=out.index)], axis=1)


def score_samples_vllm(
    llm: Any,
    tokenizer: Any,
    prompt: str,
    samples_df: pd.DataFrame,
    scorer: str = "base",
    adapter_path: str | os.PathLike | None = None,
    progress: Any = None,
) -> pd.DataFrame:
    """`score_samples` through vLLM: the log-probs vLLM gives each stored token as part of a prompt.

    Each sample becomes one prompt (the task's prompt ids + its completion ids) asking for
    `prompt_logprobs` (raw: log_softmax of the logits, no temperature) and one new token; the
    result has the same columns as `score_samples`. It agrees with the transformers scorer to
    within float rounding of the two engines' kernels (tests/test_vllm.py states the tolerance).
    """
    from vegtts.sampling.transformers_backend import encode_prompt
    from vegtts.sampling.vllm_backend import score_vllm

    prompt_ids = [int(t) for t in encode_prompt(tokenizer, prompt)[0]]
    check_samples_prompt(samples_df, prompt, len(prompt_ids))
    rows = [list(map(int, t)) for t in samples_df["token_ids"]]
    logprobs = score_vllm(llm, prompt_ids, rows, adapter_path)
    if progress is not None:
        progress.update(len(rows))
    return scores_frame(samples_df, scorer, logprobs)


def load_policy(
    model_path: str | os.PathLike, adapter_path: str | os.PathLike | None = None, dtype: str = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """Base model (and tokenizer), with the PEFT adapter at `adapter_path` on top if given."""
    from vegtts.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device=device)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path)).eval()
    return model, tokenizer


def run_scoring(
    samples_parquet: str | os.PathLike | Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    adapter_path: str | os.PathLike | None,
    scorer_name: str,
    out_parquet: str | os.PathLike,
    micro_batch: int = 8,
    logit_chunk: int = DEFAULT_LOGIT_CHUNK,
    model_and_tokenizer: tuple[Any, Any] | None = None,
    backend: str = "transformers",
    vllm_settings: dict[str, Any] | None = None,
) -> Path:
    """Score the samples of one or more sample parquets under one policy; write one parquet.

    Each sample parquet carries its exact prompt text in its metadata ("prompt"), so samples of
    several tasks (e.g. the probe's fixed base set) are scored with one model load.  The output
    parquet is written atomically, with the scorer, model/adapter paths, timings and provenance
    in its metadata.  `model_and_tokenizer` (already carrying the adapter) skips loading.
    `backend` "vllm" scores through a vLLM engine (`vllm_settings`: the sampling.vllm block) instead.
    """
    from tqdm import tqdm

    from vegtts.models import model_id_of

    paths = [samples_parquet] if isinstance(samples_parquet, (str, os.PathLike)) else list(samples_parquet)
    if not paths:
        raise ValueError("no sample parquet given")
    inputs = []
    for p in paths:
        meta = read_parquet_metadata(p)
        if "prompt" not in meta:
            raise ValueError(f"{p}: no 'prompt' in the parquet metadata; cannot teacher-force its samples")
        df = pd.read_parquet(p)
        if df.duplicated(KEYS).any():
            raise ValueError(f"{p}: duplicate sample keys")
        inputs.append((Path(p), meta["prompt"], df))
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"scoring backend {backend!r} is not one of transformers, vllm")
    if backend == "vllm":
        from transformers import AutoTokenizer

        from vegtts.sampling.vllm_backend import VLLMSettings, engine_for

        tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        llm = engine_for(model_path, VLLMSettings.from_dict(vllm_settings or {}))
    else:
        model, tokenizer = model_and_tokenizer or load_policy(model_path, adapter_path)
    t0 = time.perf_counter()
    frames = []
    total = sum(len(df) for _, _, df in inputs)
    with tqdm(total=total, desc=f"score {scorer_name}", unit="sample") as bar:
        for _path, prompt, df in inputs:
            if not len(df):
                continue
            if backend == "vllm":
                frames.append(score_samples_vllm(llm, tokenizer, prompt, df, scorer_name, adapter_path, bar))
            else:
                frames.append(score_samples(model, tokenizer, prompt, df, micro_batch, scorer_name, logit_chunk, bar))
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS + ["scorer"])
    if scores.duplicated(KEYS).any():
        raise ValueError("the sample parquets share sample keys; score them into separate files")
    seconds = time.perf_counter() - t0
    meta = {
        "scorer": scorer_name,
        "model_path": str(model_path),
        "model_id": model_id_of(model_path),
        "adapter_path": str(adapter_path) if adapter_path else None,
        "samples_parquets": [str(p) for p, _, _ in inputs],
        "micro_batch": int(micro_batch),
        "logit_chunk": int(logit_chunk),
        "n_samples": int(len(scores)),
        "n_scored_tokens": int(sum(len(t) for t in scores["token_logprobs"])) if len(scores) else 0,
        "n_prompt_tokens": int(sum(int(df["n_prompt_tokens"].iloc[0]) for _, _, df in inputs if len(df) and "n_prompt_tokens" in df)),
        "scoring_seconds": seconds,
        "backend": backend,
        "logprobs": "raw log_softmax of the policy's logits (no temperature), teacher-forced",
        "provenance": provenance(),
    }
    write_parquet(out_parquet, scores, metadata=meta)
    log.info("scored %d samples under %s in %.1f s -> %s", len(scores), scorer_name, seconds, out_parquet)
    return Path(out_parquet)

