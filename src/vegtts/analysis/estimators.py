"""Exact, resampling-free estimators over n evaluated samples of one unit.

fast_p@k: the unbiased pass@k estimator 1 - C(n-c,k)/C(n,k) (Chen et al. 2021), never
1-(1-c/n)^k.  Expected best speedup@k: E[max of a size-k subset drawn without replacement]
from order statistics.  Both are computed in product/ratio form, so n in the thousands is fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _check_k(n: int, k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")


def fast_p_at_k(n: int, c: int, k: int) -> float:
    """P(at least one success among k of n samples drawn without replacement), c successes."""
    _check_k(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"c={c} outside [0, n={n}]")
    if n - c < k:
        return 1.0
    # C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)
    i = np.arange(n - c + 1, n + 1, dtype=float)
    return float(1.0 - np.prod(1.0 - k / i))


def order_statistic_weights(n: int, k: int) -> np.ndarray:
    """w[i-1] = C(i-1,k-1)/C(n,k) = P(the i-th smallest of n is the max of a random k-subset)."""
    _check_k(n, k)
    w = np.zeros(n, dtype=float)
    w[n - 1] = k / n
    # C(i-2,k-1)/C(i-1,k-1) = (i-k)/(i-1), applied downwards from i = n.
    for i in range(n, k, -1):
        w[i - 2] = w[i - 1] * (i - k) / (i - 1)
    return w


def expected_max_at_k(values: Sequence[float] | np.ndarray, k: int) -> float:
    """E[max of k values drawn without replacement from `values`] (exact)."""
    s = np.sort(np.asarray(values, dtype=float))
    return float(np.dot(order_statistic_weights(s.size, k), s))


def expected_best_speedup_at_k(speedups: Sequence[float] | np.ndarray, k: int) -> float:
    """Expected best speedup@k; failures must be passed as speedup 0."""
    return expected_max_at_k(speedups, k)


def k_grid(n_max: int, spec: str | Iterable[int] = "auto") -> list[int]:
    """k = 1, 2, 4, ... up to n_max, plus n_max ("auto"); an explicit list is clipped to <= n_max."""
    if n_max < 1:
        return []
    if isinstance(spec, str):
        if spec != "auto":
            raise ValueError(f"k_values must be 'auto' or a list of ints, got {spec!r}")
        ks = {1 << e for e in range(n_max.bit_length()) if (1 << e) <= n_max}
        ks.add(n_max)
    else:
        ks = {int(k) for k in spec if 1 <= int(k) <= n_max}
    return sorted(ks)
