"""Surprisal (NLL) of a sample from per-token log-probs and the token span of its code."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

NLL_COLUMNS = ("nll_sum_code", "nll_mean_code", "nll_sum_all", "nll_mean_all")
# DeepConf-style tail: the lowest TAIL_SHARE of token log-probs (at least one token).
TAIL_SHARE = 0.10
TAIL_COLUMNS = ("tail_nll_sum_code", "tail_nll_mean_code", "tail_nll_sum_all", "tail_nll_mean_all")


@dataclass(frozen=True)
class Surprisal:
    nll_sum_code: float
    nll_mean_code: float
    nll_sum_all: float
    nll_mean_all: float
    n_code_tokens: int
    n_tokens: int
    tail_nll_sum_code: float = math.nan
    tail_nll_mean_code: float = math.nan
    tail_nll_sum_all: float = math.nan
    tail_nll_mean_all: float = math.nan

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def surprisal_from_logprobs(
    token_logprobs: Sequence[float] | np.ndarray | None, code_start: int, code_end: int
) -> Surprisal:
    """The four NLL variants of one completion.

    `token_logprobs` are log p of the sampled (or teacher-forced) tokens; `[code_start, code_end)`
    is the code's token span, clipped to the completion.  Sums and means over an empty set are NaN,
    so a sample without code can never win an NLL ranking by accident.
    """
    lp = np.asarray(token_logprobs if token_logprobs is not None else [], dtype=float)
    n = int(lp.size)
    start = max(0, min(int(code_start), n))
    end = max(start, min(int(code_end), n))
    code = lp[start:end]
    nan = math.nan
    tail_code, tail_all = lowest_tail(code), lowest_tail(lp)
    return Surprisal(
        nll_sum_code=float(-code.sum()) if code.size else nan,
        nll_mean_code=float(-code.mean()) if code.size else nan,
        nll_sum_all=float(-lp.sum()) if n else nan,
        nll_mean_all=float(-lp.mean()) if n else nan,
        n_code_tokens=int(code.size),
        n_tokens=n,
        tail_nll_sum_code=float(-tail_code.sum()) if code.size else nan,
        tail_nll_mean_code=float(-tail_code.mean()) if code.size else nan,
        tail_nll_sum_all=float(-tail_all.sum()) if n else nan,
        tail_nll_mean_all=float(-tail_all.mean()) if n else nan,
    )


def lowest_tail(logprobs: np.ndarray, share: float = TAIL_SHARE) -> np.ndarray:
    """The ceil(share * n) lowest log-probs (at least one; empty for an empty input)."""
    if logprobs.size == 0:
        return logprobs
    m = max(1, math.ceil(share * logprobs.size - 1e-9))
    return np.sort(logprobs)[:m]
