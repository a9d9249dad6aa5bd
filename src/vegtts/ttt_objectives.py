"""TTT objectives, pure functions of rewards and log-probs: the paper's speedup rewards over a window of
earlier samples and their advantages, group-relative (GRPO) advantages, the policy-gradient loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

OBJECTIVES = ("paper", "grpo")
REWARD_WINDOW = 32
MEDIAN_FLOOR = 1e-6
STD_FLOOR = 1e-6


def evaluation_order(df: pd.DataFrame) -> pd.DataFrame:
    """The order in which the reward history is updated: task by task (task_id sorted), then
    seed, then sample_idx, the order in which the paper's batch TTT evaluates a step's
    samples (for each task, its K samples in turn)."""
    return df.sort_values(["task_id", "seed", "sample_idx"], kind="mergesort")


def paper_rewards(
    speedups: Sequence[float],
    correct: Sequence[bool],
    task_ids: Sequence[str],
    history: Mapping[str, Sequence[float]] | None = None,
    window: int = REWARD_WINDOW,
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Normalised-speedup rewards, processed in the order given (see `evaluation_order`).

    Sample i of task t gets speedup_i / max(median(last `window` correct speedups of t seen
    before i), 1e-6), the median being 1.0 when t has no history; an incorrect sample gets 0
    and does not enter the history.  Returns (rewards, the updated history); the input
    history is not modified.  Carry the history from step to step: the paper keeps it for
    the whole TTT run of one process.
    """
    if not len(speedups) == len(correct) == len(task_ids):
        raise ValueError("speedups, correct and task_ids must have the same length")
    hist = {t: list(v) for t, v in (history or {}).items()}
    rewards = np.zeros(len(speedups), dtype=float)
    for i, (s, ok, t) in enumerate(zip(speedups, correct, task_ids)):
        if not ok:
            continue
        past = hist.setdefault(str(t), [])
        baseline = float(np.median(past[-window:])) if past else 1.0
        rewards[i] = float(s) / max(baseline, MEDIAN_FLOOR)
        past.append(float(s))
        del past[:-window]
    return rewards, hist


def paper_advantages(rewards: Sequence[float]) -> np.ndarray:
    """(r - mean) / max(std, 1e-6) over the whole batch (all tasks), population std."""
    r = np.asarray(rewards, dtype=float)
    if r.size == 0:
        return r
    return (r - r.mean()) / max(float(r.std()), STD_FLOOR)


def grpo_advantages(rewards: Sequence[float], task_ids: Sequence[str], normalize_std: bool = False) -> np.ndarray:
    """r - mean(r of the same task); divided by the group's population std (floor 1e-6) only
    with `normalize_std` (the cookbook's GRPO does not)."""
    r = np.asarray(rewards, dtype=float)
    groups = pd.Series(r).groupby(np.asarray(task_ids, dtype=object))
    adv = r - groups.transform("mean").to_numpy()
    if normalize_std:
        adv = adv / np.maximum(groups.transform(lambda g: g.std(ddof=0)).to_numpy(), STD_FLOOR)
    return adv


def policy_gradient_loss(logprobs_per_token: Any, advantages: Any, mask: Any, normalizer: float | None = None) -> Any:
    """-sum_{i,t} A_i * logp_{i,t} * mask_{i,t} / normalizer.

    `logprobs_per_token` [B, T] (a torch tensor), `advantages` [B], `mask` [B, T] (completion
    tokens).  `normalizer` defaults to mask.sum(), i.e. the mean over all completion tokens of
    the batch; micro-batches pass the whole batch's token count, so their losses (and
    gradients) add up to the whole batch's.
    """
    import torch

    adv = torch.as_tensor(advantages, dtype=logprobs_per_token.dtype, device=logprobs_per_token.device)
    mask_f = mask.to(logprobs_per_token.dtype)
    norm = float(mask_f.sum()) if normalizer is None else float(normalizer)
    if norm <= 0:
        return (logprobs_per_token * 0).sum()
    return -(adv[:, None] * logprobs_per_token * mask_f).sum() / norm
