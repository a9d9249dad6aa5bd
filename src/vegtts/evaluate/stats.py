"""Timing statistics.

CPU evaluator (``paired_speedup_stats``): rounds are paired (reference and candidate ran back to
back, in ABBA order), the per-round log ratio d_r = log(ref_r / cand_r) is the unit, the speedup
is exp(median d), and its 95% interval is the distribution-free interval of the median from
order statistics (the inverted sign test): [d_(k), d_(n+1-k)] with the largest k such that
P(Bin(n, 1/2) <= k - 1) <= 2.5%.  It assumes only that rounds are independent with a common
median: no symmetry, no normal tails; a noise burst in one batch moves one d_r, not the interval.
What differs between the two processes for their whole life is no round's noise: it is added as a
resolution term (``evaluation.timing_resolution``).

CUDA evaluator (``speedup_stats``): ratio of medians with a percentile bootstrap, sides resampled
independently (see evaluate/cuda/).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_Z95 = 1.959964

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


def median_interval_rank(n: int, confidence: float = 0.95) -> int:
    """The k (1-based) of the order-statistic interval [x_(k), x_(n+1-k)] for the median of n
    independent values: the largest k whose two tails P(Bin(n, 1/2) <= k - 1) each stay within
    (1 - confidence) / 2; 1 (min to max) when n is too small for the confidence."""
    tail = (1.0 - confidence) / 2
    k, cdf = 1, 0.0
    for j in range(n):
        cdf += math.comb(n, j) / 2.0**n  # P(X <= j)
        if cdf > tail:
            break
        k = j + 1
    return max(1, min(k, (n + 1) // 2))


def paired_speedup_stats(ref_ms: list[float], cand_ms: list[float], confidence: float = 0.95,
                         resolution: float = 0.0) -> TimingStats:
    """Speedup exp(median log(ref_r / cand_r)) over paired rounds, with its order-statistic interval.

    `resolution` (log units) is noise the rounds cannot show: two fresh processes running the same
    code differ by a few percent for their whole life (where their memory lies, how their heaps
    grew).  Each side of the interval is widened by it in quadrature:
    lo = m - sqrt((m - d_(k))^2 + (z * resolution)^2), z = 1.96 for 95%.
    """
    ref = np.asarray(ref_ms, dtype=float)
    cand = np.asarray(cand_ms, dtype=float)
    if ref.shape != cand.shape or ref.size == 0:
        raise ValueError("need the same, non-zero number of reference and candidate rounds")
    if (ref <= 0).any() or (cand <= 0).any():
        raise ValueError("round times must be positive")
    d = np.sort(np.log(ref) - np.log(cand))
    k = median_interval_rank(d.size, confidence)
    m = float(np.median(d))
    extra = (_Z95 * resolution) ** 2
    lo = m - math.sqrt((m - float(d[k - 1])) ** 2 + extra)
    hi = m + math.sqrt((float(d[d.size - k]) - m) ** 2 + extra)
    return TimingStats(float(np.median(ref)), float(np.median(cand)), _spread(ref), _spread(cand),
                       math.exp(m), math.exp(lo), math.exp(hi), int(ref.size))


def interval_width(stats: TimingStats) -> float:
    """Width of the speedup interval in log units (0.2 = the upper bound is 22% above the lower)."""
    return math.log(stats.speedup_hi) - math.log(stats.speedup_lo)


def speedup_stats(ref_ms: list[float], cand_ms: list[float], n_boot: int, seed: int) -> TimingStats:
    """ref/cand medians; 95% percentile bootstrap of the ratio of medians (the CUDA evaluator's).

    The two sides' rounds are resampled independently.
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
