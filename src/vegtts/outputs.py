"""The file names of an experiment's tables and figures, declared once.

The rule files (`from vegtts.outputs import ...`) declare these as outputs; the writers
(vegtts.analysis, vegtts.plots) write them and the report reads them. A name lives nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Analysis tables: table name -> file in <experiment>/tables/.
ANALYSIS_TABLES = {
    "sample_stats": "sample_stats.csv",
    "selection": "selection.csv",
    "selection_per_task": "selection_per_task.csv",
    "scaling": "scaling.csv",
    "signal": "signal.csv",
    "comparisons": "comparisons.csv",
    "correlations": "correlations.csv",
    "surprisal_quartiles": "surprisal_quartiles.csv",
    "logprob_spread": "logprob_spread.csv",
    "scaling_summary": "scaling_summary.csv",
    "equivalent_k": "equivalent_k.csv",
    "correct_programs": "correct_programs.csv",
    "rejections": "rejections.csv",
    "outcomes": "outcomes.csv",
}
# Every sample joined with its evaluation, next to the tables.
MERGED_SAMPLES = "samples_evaluated.parquet"

# Test-time training tables: table name -> file in <experiment>/tables/.
TTT_TABLES = {
    "trajectory": "ttt_trajectory.csv",
    "per_task": "ttt_per_task.csv",
    "selection": "ttt_selection.csv",
    "probe": "ttt_probe.csv",
    "compute": "ttt_compute.csv",
    "equal_budget": "ttt_equal_budget.csv",
    "bon_curve": "ttt_bon_curve.csv",
}

# Figures (stems in <experiment>/figures/), each written in every format of FIGURE_FORMATS.
FIGURES = ("scaling", "selection", "teaser", "surprisal_quartiles", "length_speedup", "rule_wins")
TTT_FIGURES = ("ttt_trajectory", "ttt_rho")
FIGURE_FORMATS = ("png", "pdf")


def figure_files(folder: str, names: Iterable[str], fmt: str) -> list[str]:
    return [f"{folder}/{name}.{fmt}" for name in names]


def table_files(folder: str, files: Iterable[str]) -> list[str]:
    return [f"{folder}/{name}" for name in files]


def benchmark_file(artifact: str) -> str:
    """Where a job's Snakemake benchmark lies: next to the artifact it made (rules and report)."""
    stem = artifact.removesuffix(".parquet")
    return f"{stem}.benchmark.tsv"


def folder_of(paths: Iterable[str | Path], names: Iterable[str]) -> Path:
    """The one folder that the declared files `paths` share, once they are checked to be exactly
    the files `names` (what a command given a rule's inputs or outputs writes into or reads from)."""
    paths = [Path(p) for p in paths]
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise ValueError(f"expected files in one folder, got {len(folders)} folders: {sorted(map(str, folders))}")
    given, declared = sorted(p.name for p in paths), sorted(names)
    if given != declared:
        raise ValueError(f"expected the files {declared}, got {given}")
    return folders.pop()
