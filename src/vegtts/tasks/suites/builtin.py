"""builtin: the project's own CPU problems (src/vegtts/tasks/builtin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegtts.tasks.suites.base import SUITES, ProblemFile, TaskSuite, packaged_problems

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "builtin"

# Builtin problems the default experiment uses, chosen by sampling Gemma 3 270M base (5-shot body
# prompt, temperature 0.5, K=8; benchmarks/results/default_choice.md).  The model copies the last
# line of a short reference, sometimes collapses or extends a nesting of an idempotent op, and
# often answers with the last few-shot idiom.  So the mix leads with idempotent ops applied three
# times (copies are correct at 1x, collapsed calls correct at ~3x, extra nesting correct but slower)
# and "dead-work" references (an unused statistic before the return: copying the last line is
# correct and faster), then one-line naive references the model copies.  Harder problems
# (sigmoid_exp, silu_mul, layernorm_manual, ...) stay in the suite but got no correct samples.
DEFAULT_TASK_IDS: list[str] = [
    "abs_thrice",
    "trunc_thrice",
    "sign_thrice",
    "relu_thrice",
    "round_thrice",
    "ceil_thrice",
    "dead_center_relu",
    "dead_scale_abs",
    "dead_softmax_tanh",
    "relu_twice",
    "relu_where",
    "leaky_relu_where",
]


def problems(suite_cfg: dict[str, Any]) -> dict[str, ProblemFile]:
    return packaged_problems(BUILTIN_DIR)


SUITES.register(TaskSuite("builtin", problems, default_ids=tuple(DEFAULT_TASK_IDS)))
