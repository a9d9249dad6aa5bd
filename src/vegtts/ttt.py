"""Test-time training (TTT): LoRA policy-gradient updates on the policy's own evaluated samples.

Objectives (pure functions, no model needed):
- `paper_rewards`: speedup normalised by the running median of that task's previous correct
  speedups (window 32; 1.0 without history; floor 1e-6); 0 if incorrect.
- `paper_advantages`: z-score over the whole batch, all tasks together (population std, floor
  1e-6), as the paper's batch TTT ("TTRL-style", not per-prompt).
- `grpo_advantages`: reward minus its task group's mean; NOT divided by the group std by
  default, like the tinker cookbook's GRPO (`normalize_std=True` divides by the group's
  population std, floor 1e-6).
- `policy_gradient_loss`: token-level REINFORCE, -sum(A_i * log p(token)) over completion
  tokens divided by the number of completion tokens in the batch.  The samples are on-policy
  (drawn from the parameters being updated), so the paper's importance ratio p_theta/q is 1
  at the update point and its gradient equals this one.

`ttt_step` makes one AdamW step on the LoRA parameters from one batch of evaluated samples.
Log-probs are computed as in the scorer (prompt once per task, completion positions only,
chunked and checkpointed logits), in micro-batches with gradient accumulation.  LoRA changes
the prompt's hidden states too, so the exact gradient flows through the prompt's keys/values:
by default (`detach_prompt=False`) the gradients collected on the prompt's cache over all
micro-batches of a task are carried back through the prompt's graph in one extra backward
pass (see `vegtts.scoring.PromptState`).  `detach_prompt=True` treats the prompt cache as a
constant (cheaper; biased: it drops the gradient through the prompt positions).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vegtts.config import dataclass_from_settings, schema_default
from vegtts.io import fsync_dir, fsync_tree, sibling_temp_dir, write_dir_manifest
from vegtts.peak_memory import measure_peak_rss
from vegtts.scoring import (
    DEFAULT_LOGIT_CHUNK,
    KEYS,
    backward_through_prompt,
    causal_lm,
    completion_logprobs,
    encode_prompt_ids,
    run_prompt,
)
from vegtts.ttt_objectives import (
    OBJECTIVES,
    REWARD_WINDOW,
    evaluation_order,
    grpo_advantages,
    paper_advantages,
    paper_rewards,
    policy_gradient_loss,
)

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
TTT_STATE_FILE = "vegtts_ttt_state.json"
DEFAULT_TARGET_MODULES = tuple(schema_default("ttt.lora.target_modules"))


# ---------------------------------------------------------------- settings and LoRA


@dataclass
class TTTSettings:
    objective: str = schema_default("ttt.objective")  # paper | grpo
    rank: int = schema_default("ttt.lora.rank")
    alpha: float = float(schema_default("ttt.lora.alpha"))
    target_modules: list[str] = field(default_factory=lambda: schema_default("ttt.lora.target_modules"))
    lora_dropout: float = schema_default("ttt.lora.dropout")
    learning_rate: float = schema_default("ttt.learning_rate")
    weight_decay: float = schema_default("ttt.weight_decay")
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = schema_default("ttt.max_grad_norm")  # None: no clipping (norm still reported)
    micro_batch: int = schema_default("ttt.micro_batch")  # samples per forward/backward
    logit_chunk: int = DEFAULT_LOGIT_CHUNK
    detach_prompt: bool = schema_default("ttt.detach_prompt")  # True: no gradient through the prompt (not exact)
    reward_window: int = REWARD_WINDOW
    grpo_normalize_std: bool = schema_default("ttt.grpo_normalize_std")
    seed: int = schema_default("seed")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TTTSettings:
        s = dataclass_from_settings(cls, d, "ttt")
        s.target_modules = list(s.target_modules)
        s.adam_betas = tuple(s.adam_betas)  # type: ignore[assignment]
        if s.objective not in OBJECTIVES:
            raise ValueError(f"ttt.objective {s.objective!r}; allowed: {OBJECTIVES}")
        if s.rank < 1 or s.micro_batch < 1 or s.logit_chunk < 1 or s.reward_window < 1:
            raise ValueError("ttt rank, micro_batch, logit_chunk and reward_window must be >= 1")
        if s.learning_rate <= 0:
            raise ValueError("ttt.learning_rate must be > 0")
        return s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


def _settings(settings: TTTSettings | Mapping[str, Any]) -> TTTSettings:
    return settings if isinstance(settings, TTTSettings) else TTTSettings.from_dict(settings)


def make_lora_model(
    model: Any,
    rank: int = TTTSettings.rank,
    alpha: float = TTTSettings.alpha,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
    seed: int = 0,
    dropout: float = TTTSettings.lora_dropout,
) -> Any:
    """Wrap `model` with a fresh LoRA adapter (peft); the base weights are frozen.

    `seed` fixes the LoRA init (A random, B zero, so the wrapped model starts equal to the base).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=int(rank), lora_alpha=float(alpha), target_modules=list(target_modules), lora_dropout=float(dropout),
        bias="none", task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return get_peft_model(model, config)


def load_lora_model(model: Any, adapter_dir: str | os.PathLike) -> Any:
    """Wrap `model` with a saved adapter, trainable (to continue TTT from it)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def lora_parameters(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: Any, settings: TTTSettings | Mapping[str, Any]) -> Any:
    import torch

    s = _settings(settings)
    return torch.optim.AdamW(
        lora_parameters(model), lr=s.learning_rate, betas=tuple(s.adam_betas), eps=s.adam_eps, weight_decay=s.weight_decay
    )


# ---------------------------------------------------------------- one update


def compute_advantages(
    batch: pd.DataFrame, objective: str, history: Mapping[str, Sequence[float]] | None, settings: TTTSettings
) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """Rewards and advantages of a batch already in `evaluation_order`; returns the new history."""
    correct = batch["correct"].fillna(False).astype(bool).to_numpy()
    speedups = batch["speedup"].astype(float).fillna(0.0).to_numpy()
    rewards, new_history = paper_rewards(speedups, correct, batch["task_id"].tolist(), history, settings.reward_window)
    if objective == "paper":
        adv = paper_advantages(rewards)
    elif objective == "grpo":
        adv = grpo_advantages(rewards, batch["task_id"].tolist(), settings.grpo_normalize_std)
    else:
        raise ValueError(f"ttt objective {objective!r}; allowed: {OBJECTIVES}")
    return rewards, adv, new_history




def join_evaluations(samples_df: pd.DataFrame, evaluations_df: pd.DataFrame) -> pd.DataFrame:
    """Samples with their `correct` and `speedup` (every sample must have one evaluation)."""
    ev = evaluations_df[KEYS + ["correct", "speedup"]]
    merged = samples_df.drop(columns=[c for c in ("correct", "speedup") if c in samples_df]).merge(
        ev, on=KEYS, how="left", indicator=True, validate="one_to_one"
    )
    missing = merged["_merge"] != "both"
    if missing.any():
        raise ValueError(f"{int(missing.sum())} samples have no evaluation, e.g.\n{merged.loc[missing, KEYS].head()}")
    merged = merged.drop(columns="_merge")
    merged["correct"] = merged["correct"].fillna(False).astype(bool)
    merged["speedup"] = merged["speedup"].astype(float).where(merged["correct"], 0.0)
    return merged


def ttt_step(
    model_with_lora: Any,
    tokenizer: Any,
    prompts_by_task: Mapping[str, str],
    samples_df: pd.DataFrame,
    evaluations_df: pd.DataFrame,
    settings: TTTSettings | Mapping[str, Any],
    optimizer: Any = None,
    history: Mapping[str, Sequence[float]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """One optimizer step on one batch of evaluated samples (all tasks together).

    `prompts_by_task`: the exact prompt text each task's samples were drawn from.
    `optimizer`: an AdamW over the LoRA parameters carrying its moments from earlier steps
    (`make_optimizer`, restored by `load_optimizer_state`); None makes a fresh one.
    `history`: the reward history of earlier steps (paper rewards; None at the first step).
    Every completion token of every sample is in the loss's normaliser; samples whose
    advantage is exactly 0 contribute no gradient and are not run.
    Returns stats: samples, tokens, loss, grad norm (before clipping), reward and advantage
    summaries, wall time, peak RSS, and the updated reward `history`.
    """
    import torch
    from tqdm import tqdm

    s = _settings(settings)
    t0 = time.perf_counter()
    batch = evaluation_order(join_evaluations(samples_df, evaluations_df)).reset_index(drop=True)
    missing = sorted(set(batch["task_id"]) - set(prompts_by_task))
    if missing:
        raise ValueError(f"no prompt for tasks {missing}")
    rewards, adv, new_history = compute_advantages(batch, s.objective, history, s)
    rows = [list(map(int, t)) for t in batch["token_ids"]]
    n_tokens_total = sum(len(r) for r in rows)
    params = lora_parameters(model_with_lora)
    if not params:
        raise ValueError("the model has no trainable (LoRA) parameters; wrap it with make_lora_model")
    opt = optimizer if optimizer is not None else make_optimizer(model_with_lora, s)
    lm = causal_lm(model_with_lora)
    lm.train()
    try:
        opt.zero_grad(set_to_none=True)
        device = params[0].device
        loss_total, n_train_tokens, n_prompt_tokens, n_forward = 0.0, 0, 0, 0
        work = [i for i in range(len(rows)) if rows[i] and adv[i] != 0.0]
        with torch.random.fork_rng(devices=[]), measure_peak_rss() as mem:
            torch.manual_seed(s.seed)  # only LoRA dropout draws random numbers
            bar = tqdm(total=len(work), desc="ttt step", unit="sample", disable=not progress)
            for task_id, idx in batch.loc[work].groupby("task_id", sort=True).groups.items():
                idx = sorted(idx, key=lambda i: -len(rows[i]))  # longest first: less padding
                state = run_prompt(model_with_lora, encode_prompt_ids(tokenizer, prompts_by_task[task_id], device),
                                   track_grad=not s.detach_prompt)
                n_prompt_tokens += state.n_prompt_tokens
                for start in range(0, len(idx), s.micro_batch):
                    mb = idx[start : start + s.micro_batch]
                    lp, mask = completion_logprobs(model_with_lora, state, [rows[i] for i in mb], s.logit_chunk)
                    loss = policy_gradient_loss(lp, adv[mb], mask, normalizer=n_tokens_total)
                    if loss.requires_grad:  # False only when nothing in it depends on LoRA (detached, 1-token rows)
                        loss.backward()
                    loss_total += float(loss.detach())
                    n_train_tokens += int(mask.sum())
                    n_forward += len(mb)
                    bar.update(len(mb))
                if not s.detach_prompt:
                    backward_through_prompt(state)
                del state
            bar.close()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm if s.max_grad_norm else math.inf))
            opt.step()
            opt.zero_grad(set_to_none=True)
    finally:
        lm.eval()
    seconds = time.perf_counter() - t0
    stats = {
        "objective": s.objective,
        "n_samples": int(len(batch)),
        "n_tasks": int(batch["task_id"].nunique()),
        "n_samples_trained": int(n_forward),
        "n_completion_tokens": int(n_tokens_total),
        "n_train_tokens": int(n_train_tokens),
        "n_prompt_tokens": int(n_prompt_tokens),
        "loss": loss_total,
        "grad_norm": grad_norm,
        "reward_mean": float(np.mean(rewards)) if len(rewards) else 0.0,
        "reward_max": float(np.max(rewards)) if len(rewards) else 0.0,
        "n_correct": int(batch["correct"].sum()),
        "advantage_abs_mean": float(np.mean(np.abs(adv))) if len(adv) else 0.0,
        "learning_rate": s.learning_rate,
        "detach_prompt": s.detach_prompt,
        "wall_seconds": seconds,
        "peak_rss_mb": mem.peak_mb,
        "peak_rss_delta_mb": mem.delta_mb,
        "memory_method": mem.method,
        "history": new_history,
    }
    log.info(
        "ttt step (%s): %d samples, %d tokens, loss %.4g, grad norm %.3g, %.1f s, peak RSS %.0f MiB",
        s.objective, stats["n_samples"], n_train_tokens, loss_total, grad_norm, seconds, mem.peak_mb,
    )
    return stats


# ---------------------------------------------------------------- saving


def save_adapter(
    model: Any, path: str | os.PathLike, optimizer: Any = None, state: Mapping[str, Any] | None = None
) -> Path:
    """Save the LoRA adapter (peft format), optionally the optimizer state and a JSON state
    (reward history, stats, settings), atomically: written to a temporary sibling folder,
    then renamed onto `path` (an existing folder at `path` is replaced)."""
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling_temp_dir(target)
    try:
        model.save_pretrained(str(tmp))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        if state is not None:
            (tmp / TTT_STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True, default=str) + "\n")
        write_dir_manifest(tmp)  # every file's digest: readers verify the adapter (vegtts.io.verify_dir)
        fsync_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_optimizer_state(optimizer: Any, adapter_dir: str | os.PathLike) -> bool:
    """Restore AdamW moments saved by `save_adapter`; False if the folder has none."""
    import torch

    f = Path(adapter_dir) / OPTIMIZER_FILE
    if not f.exists():
        return False
    optimizer.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    return True


def load_ttt_state(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    f = Path(adapter_dir) / TTT_STATE_FILE
    return json.loads(f.read_text()) if f.exists() else {}


# ---------------------------------------------------------------- one update from files (for the CLI)


def prompts_from_sample_parquets(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """task_id -> the exact prompt text, from the sample parquets' metadata."""
    from vegtts.io import read_parquet_metadata

    prompts: dict[str, str] = {}
    for p in paths:
        meta = read_parquet_metadata(p)
        tasks = set(pd.read_parquet(p, columns=["task_id"])["task_id"]) or {meta.get("task_id")}
        if "prompt" not in meta:
            raise ValueError(f"{p}: no 'prompt' in the parquet metadata")
        for t in tasks:
            if t in prompts and prompts[t] != meta["prompt"]:
                raise ValueError(f"task {t!r} has two different prompts in {list(map(str, paths))}")
            prompts[str(t)] = meta["prompt"]
    return prompts


def _check_adapter_matches(model: Any, s: TTTSettings, adapter_dir: str | os.PathLike) -> None:
    cfg = model.peft_config["default"]
    have = (int(cfg.r), float(cfg.lora_alpha), sorted(cfg.target_modules))
    want = (s.rank, float(s.alpha), sorted(s.target_modules))
    if have != want:
        raise ValueError(f"{adapter_dir}: adapter has (rank, alpha, targets) {have}, settings ask for {want}")


def run_ttt_update(
    sample_parquets: Sequence[str | os.PathLike],
    eval_parquets: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    out_adapter: str | os.PathLike,
    settings: TTTSettings | Mapping[str, Any],
    previous_adapter: str | os.PathLike | None = None,
    step: int = 1,
    model_and_tokenizer: tuple[Any, Any] | None = None,
) -> Path:
    """TTT step `step` of one seed: update on the evaluated samples of step-1, save the adapter.

    `sample_parquets`/`eval_parquets`: the samples drawn at step-1 (from the base policy when
    step == 1, else from `previous_adapter`) and their evaluations; the prompts come from the
    sample parquets' metadata.  Step 1 starts a fresh LoRA (init seeded by settings.seed);
    later steps continue `previous_adapter` with its AdamW moments and reward history.
    Writes `out_adapter` atomically: the peft adapter, optimizer.pt and vegtts_ttt_state.json
    (step, settings, stats incl. tokens / wall time / peak RSS for compute accounting, the
    reward history, inputs, provenance).  `model_and_tokenizer`: an already loaded base model
    (it is wrapped in place by peft).
    """
    import torch

    from vegtts.io import provenance
    from vegtts.models import load_model_and_tokenizer

    s = _settings(settings)
    if step < 1:
        raise ValueError("ttt step numbers start at 1 (step 0 is the base policy)")
    if (previous_adapter is None) != (step == 1):
        raise ValueError("step 1 starts from the base model (no previous adapter); later steps need one")
    samples = pd.concat([pd.read_parquet(p) for p in sample_parquets], ignore_index=True)
    evals = pd.concat([pd.read_parquet(p) for p in eval_parquets], ignore_index=True)
    prompts = prompts_from_sample_parquets(sample_parquets)
    model, tokenizer = model_and_tokenizer or load_model_and_tokenizer(model_path)
    torch.manual_seed(s.seed)
    if previous_adapter is None:
        lora = make_lora_model(model, s.rank, s.alpha, s.target_modules, s.seed, s.lora_dropout)
        history: dict[str, list[float]] = {}
        optimizer = make_optimizer(lora, s)
    else:
        lora = load_lora_model(model, previous_adapter)
        _check_adapter_matches(lora, s, previous_adapter)
        prev_state = load_ttt_state(previous_adapter)
        if prev_state.get("step") not in (None, step - 1):
            raise ValueError(f"{previous_adapter} is step {prev_state.get('step')}, expected {step - 1}")
        history = prev_state.get("history", {})
        optimizer = make_optimizer(lora, s)
        if not load_optimizer_state(optimizer, previous_adapter):
            log.warning("%s has no optimizer state: AdamW moments restart from zero", previous_adapter)
    stats = ttt_step(lora, tokenizer, prompts, samples, evals, s, optimizer=optimizer, history=history)
    new_history = stats.pop("history")
    state = {
        "step": int(step),
        "settings": s.to_dict(),
        "stats": stats,
        "history": new_history,
        "previous_adapter": str(previous_adapter) if previous_adapter else None,
        "model_path": str(model_path),
        "sample_parquets": [str(p) for p in sample_parquets],
        "eval_parquets": [str(p) for p in eval_parquets],
        "provenance": provenance(),
    }
    return save_adapter(lora, out_adapter, optimizer=optimizer, state=state)
