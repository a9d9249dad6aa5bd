"""Analysis: merged per-sample data, exact estimators, selection rules and provenance-headed tables."""

from vegtts.analysis.estimators import expected_best_speedup_at_k, expected_max_at_k, fast_p_at_k, k_grid
from vegtts.analysis.merge import merge_samples_and_evaluations
from vegtts.analysis.run import run_analysis
from vegtts.analysis.selection import aggregate_selection, select_all, select_unit
from vegtts.analysis.surprisal import surprisal_from_logprobs
from vegtts.analysis.tables import read_table, write_table

__all__ = [
    "aggregate_selection", "expected_best_speedup_at_k", "expected_max_at_k",
    "fast_p_at_k", "k_grid", "merge_samples_and_evaluations", "read_table", "run_analysis", "select_all",
    "select_unit", "surprisal_from_logprobs", "write_table",
]
