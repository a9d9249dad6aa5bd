"""Join samples with their evaluations (and optional teacher-forced scores) into one row per sample."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from vegtts.analysis.programs import REFERENCE_COPY_FLAG, reference_copy_column
from vegtts.analysis.surprisal import NLL_COLUMNS, TAIL_COLUMNS, surprisal_from_logprobs

log = logging.getLogger(__name__)

KEYS = ["task_id", "policy", "seed", "sample_idx"]
# Heavy per-token columns that the analysis does not need once surprisal is computed.
DROPPED_SAMPLE_COLUMNS = ("token_ids", "token_logprobs", "program")


def _read_all(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    if not frames:
        raise ValueError("no input files given")
    return pd.concat(frames, ignore_index=True)


def _check_unique(df: pd.DataFrame, what: str) -> None:
    dup = df.duplicated(KEYS, keep=False)
    if dup.any():
        raise ValueError(f"{what}: {int(dup.sum())} rows share a key {KEYS}, e.g.\n{df.loc[dup, KEYS].head()}")


def surprisal_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The NLL variants and token counts of every row with token_logprobs and a code span."""
    rows = [
        surprisal_from_logprobs(lp, s, e).to_dict()
        for lp, s, e in zip(df["token_logprobs"], df["code_token_start"], df["code_token_end"])
    ]
    cols = list(NLL_COLUMNS) + ["n_code_tokens", "n_tokens"] + list(TAIL_COLUMNS)
    return pd.DataFrame(rows, index=df.index, columns=cols)


def add_outcome_columns(df: pd.DataFrame) -> pd.DataFrame:
    """fast_1 (correct and speedup > 1, strict) and fast_1_sig (correct and speedup_lo > 1)."""
    out = df.copy()
    correct = out["correct"].fillna(False).astype(bool)
    out["correct"] = correct
    out["speedup"] = out["speedup"].astype(float).where(correct, 0.0)
    out["fast_1"] = correct & (out["speedup"] > 1.0)
    out["fast_1_sig"] = correct & (out["speedup_lo"].astype(float) > 1.0)
    out["has_code"] = out["extract_status"].ne("no_code") if "extract_status" in out else True
    return out


def merge_samples_and_evaluations(
    sample_paths: Sequence[str | os.PathLike],
    eval_paths: Sequence[str | os.PathLike],
    score_paths: Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """One row per sample: sample fields, evaluation fields, fast_1, fast_1_sig and surprisal.

    Every sample must have exactly one evaluation row (joined on task_id, policy, seed,
    sample_idx); a missing one is an error, not a silent failure.  Surprisal comes from the
    sample's own token_logprobs unless `score_paths` gives teacher-forced scores: parquet files
    with the same keys and either the four nll_* columns or token_logprobs + code span; those
    values then replace the sampled ones (token counts too, where given).
    """
    samples = _read_all(sample_paths)
    evals = _read_all(eval_paths)
    _check_unique(samples, "samples")
    _check_unique(evals, "evaluations")

    # n_tokens is recomputed from token_logprobs so that it always matches the NLL it averages.
    nll = surprisal_columns(samples)
    samples = pd.concat([samples.drop(columns=[c for c in nll.columns if c in samples]), nll], axis=1)
    # Before the program text is dropped: is the candidate the reference itself (see analysis.programs)?
    programs = samples["program"] if "program" in samples else pd.Series("", index=samples.index)
    samples["_reference_copy"] = reference_copy_column(programs)
    samples = samples.drop(columns=[c for c in DROPPED_SAMPLE_COLUMNS if c in samples])

    eval_cols = [c for c in evals.columns if c not in samples.columns or c in KEYS]
    merged = samples.merge(evals[eval_cols], on=KEYS, how="left", indicator=True, validate="one_to_one")
    missing = merged["_merge"] != "both"
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} samples have no evaluation row, e.g.\n{merged.loc[missing, KEYS].head()}"
        )
    merged = merged.drop(columns="_merge")
    flagged = merged["flags"].fillna("").astype(str).str.split(",").map(lambda f: REFERENCE_COPY_FLAG in f) \
        if "flags" in merged else False
    merged["reference_copy"] = merged.pop("_reference_copy").astype(bool) | flagged
    extra = len(evals) - len(merged)
    if extra > 0:
        log.warning("%d evaluation rows match no sample and are ignored", extra)

    if score_paths:
        merged = _apply_scores(merged, _read_all(score_paths))

    merged = add_outcome_columns(merged)
    return merged.sort_values(KEYS, kind="mergesort").reset_index(drop=True)


def _apply_scores(merged: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    _check_unique(scores, "scores")
    if not set(NLL_COLUMNS) <= set(scores.columns):
        if "token_logprobs" not in scores:
            raise ValueError(f"scores need the columns {NLL_COLUMNS} or token_logprobs + code span")
        scores = pd.concat([scores[KEYS], surprisal_columns(scores)], axis=1)
    take = [c for c in (*NLL_COLUMNS, *TAIL_COLUMNS, "n_code_tokens", "n_tokens") if c in scores]
    if not set(TAIL_COLUMNS) <= set(take):
        log.warning("scores carry no per-token log-probs: tail confidence stays the sampled one")
    out = merged.drop(columns=take).merge(scores[KEYS + take], on=KEYS, how="left", validate="one_to_one")
    unscored = out[NLL_COLUMNS[0]].isna() & ~merged[NLL_COLUMNS[0]].isna().to_numpy()
    if unscored.any():
        log.warning("%d samples have no teacher-forced score; their NLL is NaN", int(unscored.sum()))
    for col in ("n_code_tokens", "n_tokens"):
        if col not in out:
            out[col] = merged[col].to_numpy()
    out["n_code_tokens"] = out["n_code_tokens"].fillna(0).astype(np.int64)
    return out
