"""What a selection rule is, and the pieces rules share: the samples of a unit, ranking, picks.

A rule picks one sample (or an exact expectation over samples, for random rules) among the correct
samples of a unit (one policy, seed and task) and says whether it is fast_1 (task success), its
speedup and what it cost. A unit without a correct sample fails every rule with speedup 0. Ties in a
ranking go to the smallest sample_idx; NaN keys rank last.

Every ranking rule is also *deployable*: rank all samples before correctness is known and check
them in rank order until the needed number of correct ones is found. Because the ranking restricted
to the correct samples is the ranking among correct samples, the deployable variant selects the
same sample; what it adds is the cost, `n_evaluated` (correctness checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from vegtts.analysis.constants import GEOMEAN_EPS
from vegtts.registry import Registry

NO_VARIANT = "-"
TOP_N = 3
KINDS = ("main", "length_controlled", "tail", "control")  # the groups tables and figures show rules in


@dataclass(frozen=True)
class Pick:
    """What a rule selected in one unit."""

    sample_idx: int  # -1: none (no correct sample) or an expectation over samples
    success: float  # 1/0, or the exact probability for random rules
    speedup: float  # speedup (expectation for random rules); 0 on failure
    log_speedup: float  # log(max(speedup, GEOMEAN_EPS)) (expectation for random rules)
    n_timed: float  # timings spent beyond correctness checking
    n_evaluated: float  # correctness checks spent by the deployable variant (expectation for random rules)
    expected: bool = False  # True for exact-expectation rules


def log_floor(speedup: np.ndarray | float) -> np.ndarray | float:
    return np.log(np.maximum(speedup, GEOMEAN_EPS))


def no_pick(n: int, expected: bool = False) -> Pick:
    """A unit without a correct sample: every rule fails, having checked all n samples."""
    return Pick(-1, 0.0, 0.0, float(log_floor(0.0)), 0, n, expected)


def rank(values: np.ndarray, sample_idx: np.ndarray, descending: bool) -> np.ndarray:
    """Positions sorted by value (NaN last), ties by smallest sample_idx."""
    v = np.asarray(values, dtype=float)
    nan = np.isnan(v)
    key = np.where(nan, 0.0, -v if descending else v)
    # lexsort: last key is primary.
    return np.lexsort((np.asarray(sample_idx), key, nan))


def residualise(nll: np.ndarray, length: np.ndarray) -> np.ndarray:
    """NLL minus its least-squares fit a + b * length over the finite entries (NaN stays NaN).

    With fewer than 2 distinct lengths the slope is not identified and the fit is the mean.
    """
    nll = np.asarray(nll, dtype=float)
    length = np.asarray(length, dtype=float)
    ok = np.isfinite(nll) & np.isfinite(length)
    out = np.full(nll.shape, np.nan)
    if not ok.any():
        return out
    x, y = length[ok], nll[ok]
    if np.unique(x).size >= 2:
        b, a = np.polyfit(x, y, 1)
        out[ok] = y - (a + b * x)
    else:
        out[ok] = y - y.mean()
    return out


def _has_code(unit: pd.DataFrame) -> np.ndarray:
    return unit["has_code"].to_numpy(dtype=bool) if "has_code" in unit else np.ones(len(unit), bool)


def length_key(unit: pd.DataFrame) -> np.ndarray:
    """Code tokens of every sample of a unit; samples without code get NaN."""
    return np.where(_has_code(unit), unit["n_code_tokens"].to_numpy(dtype=float), np.nan)


def unit_keys(unit: pd.DataFrame, variant: str) -> dict[str, np.ndarray]:
    """The ranking keys of every sample of a unit under one variant; samples without code get NaN."""
    has_code = _has_code(unit)
    length_col = "n_code_tokens" if variant.endswith("code") else "n_tokens"
    nll = unit[f"nll_{variant}"].to_numpy(dtype=float)
    tail_col = f"tail_nll_{variant}"
    tail = unit[tail_col].to_numpy(dtype=float) if tail_col in unit else np.full(len(unit), np.nan)
    length = unit[length_col].to_numpy(dtype=float) if length_col in unit else np.full(len(unit), np.nan)
    return {
        "nll": np.where(has_code, nll, np.nan),
        "resid": np.where(has_code, residualise(np.where(has_code, nll, np.nan), length), np.nan),
        "tail": np.where(has_code, tail, np.nan),
        "length": length_key(unit),
    }


def expected_position_of_jth_success(n: int, c: int, j: int) -> float:
    """E[position of the j-th success] in a uniformly random order of n items with c successes (j <= c)."""
    return j * (n + 1) / (c + 1)


@dataclass
class UnitSamples:
    """The samples of one unit as arrays, with their ranking keys per variant (computed once)."""

    frame: pd.DataFrame
    sample_idx: np.ndarray = field(init=False)
    correct: np.ndarray = field(init=False)
    speedup: np.ndarray = field(init=False)
    fast_1: np.ndarray = field(init=False)
    _keys: dict[str, dict[str, np.ndarray]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.sample_idx = self.frame["sample_idx"].to_numpy()
        self.correct = self.frame["correct"].to_numpy(dtype=bool)
        self.speedup = self.frame["speedup"].to_numpy(dtype=float)
        self.fast_1 = self.frame["fast_1"].to_numpy(dtype=bool)

    @property
    def n(self) -> int:
        return len(self.frame)

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    def keys(self, variant: str) -> dict[str, np.ndarray]:
        """unit_keys under `variant`; under NO_VARIANT only the length key."""
        if variant not in self._keys:
            self._keys[variant] = {"length": length_key(self.frame)} if variant == NO_VARIANT else unit_keys(self.frame, variant)
        return self._keys[variant]


@dataclass(frozen=True)
class RankBy:
    """Rank every sample by `key`, take the first `top` correct ones in rank order, select the fastest.

    n_evaluated is the rank position of the last correct sample needed (all n when there are fewer).
    """

    key: str  # "nll", "resid", "tail" (per variant) or "length" (code tokens, no variant)
    descending: bool
    top: int = 1

    def __call__(self, unit: UnitSamples, variant: str) -> Pick:
        idx, correct, speedup, fast = unit.sample_idx, unit.correct, unit.speedup, unit.fast_1
        n = idx.size
        order = rank(unit.keys(variant)[self.key], idx, self.descending)
        correct_positions = np.flatnonzero(correct[order])
        if correct_positions.size == 0:
            return no_pick(n)
        m = min(self.top, correct_positions.size)
        top = order[correct_positions[:m]]
        n_evaluated = int(correct_positions[m - 1]) + 1 if correct_positions.size >= self.top else n
        best = top[rank(speedup[top], idx[top], descending=True)[0]]
        s = float(speedup[best])
        return Pick(int(idx[best]), float(bool(fast[best])), s, float(log_floor(s)), m if self.top > 1 else 1, n_evaluated)


@dataclass(frozen=True)
class SelectionRule:
    name: str  # the value of the rule column in every table
    kind: str  # one of KINDS: which group tables and figures show it in
    definition: str  # one line, in table headers and the report as definition.rule.<name>
    label: str  # legend and axis text in figures
    color: str  # its colour in figures (Okabe-Ito for the built-in rules)
    marker: str  # its matplotlib marker
    select: Callable[[UnitSamples, str], Pick]  # a unit's samples and a surprisal variant (NO_VARIANT if not per_variant)
    per_variant: bool = False  # ranks by a surprisal variant: applied under every variant, else once

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"selection rule {self.name!r}: kind {self.kind!r} is not one of {KINDS}")


# Registration order is the display order of tables and figures.
RULES: Registry[SelectionRule] = Registry("selection rule")
