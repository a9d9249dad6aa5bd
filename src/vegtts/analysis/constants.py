"""Numbers and names every analysis module shares (the definitions quote them)."""

from __future__ import annotations

# Failures (no correct sample, so no selected speedup) enter geometric means at this floor.
GEOMEAN_EPS = 1e-3
# A value within this of a Best-of-N curve's ceiling (task success: points; speedup: relative) is
# matched to a budget only as a bound ("at least k"): where the curve touches its ceiling is set by
# the pool's size, not by the value.
CEILING_TOLERANCE = 0.01

SURPRISAL_VARIANTS = ("mean_code", "sum_code", "mean_all", "sum_all")
DEFAULT_VARIANT = "mean_code"
