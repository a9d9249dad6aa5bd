"""Timing statistics: medians of rounds and a paired bootstrap interval of the speedup."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TimingStats:
    ref_time_ms: float
    cand_time_ms: float
    ref_time_spread: float  # IQR / median of the per-call times of the rounds
    cand_time_spread: float
    speedup: float
    speedup_lo: float
    speedup_hi: float
    n_rounds: int


def _spread(x: np.ndarray) -> float:
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else float("nan")


def speedup_stats(ref_ms: list[float], cand_ms: list[float], n_boot: int, seed: int) -> TimingStats:
    """ref/cand medians; 95% percentile bootstrap of the ratio of medians.

    The two sides' rounds are resampled independently.  Pairing rounds (they ran back to back)
    would narrow the interval when drift is shared, but on a shared machine most noise is a burst
    hitting one batch only, and the paired interval then covered 1 in too few A/A runs; the
    unpaired one is the conservative choice (see benchmarks/results/evaluator_cpu.txt).
    """
    ref = np.asarray(ref_ms, dtype=float)
    cand = np.asarray(cand_ms, dtype=float)
    if ref.shape != cand.shape or ref.size == 0:
        raise ValueError("need the same, non-zero number of reference and candidate rounds")
    ref_med, cand_med = float(np.median(ref)), float(np.median(cand))
    speedup = ref_med / cand_med
    lo = hi = speedup
    if n_boot > 0 and ref.size > 1:
        rng = np.random.default_rng(seed)
        ref_idx = rng.integers(0, ref.size, size=(n_boot, ref.size))
        cand_idx = rng.integers(0, cand.size, size=(n_boot, cand.size))
        ratios = np.median(ref[ref_idx], axis=1) / np.median(cand[cand_idx], axis=1)
        lo, hi = (float(v) for v in np.percentile(ratios, [2.5, 97.5]))
    return TimingStats(ref_med, cand_med, _spread(ref), _spread(cand), speedup, lo, hi, int(ref.size))
