"""builtin_gpu: the project's own GPU problems (CUDA/Triton evaluation), kept apart from the CPU suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegtts.tasks.suites.base import SUITES, ProblemFile, TaskSuite, packaged_problems

BUILTIN_GPU_DIR = Path(__file__).resolve().parents[1] / "builtin_gpu"


def problems(suite_cfg: dict[str, Any]) -> dict[str, ProblemFile]:
    return packaged_problems(BUILTIN_GPU_DIR)


SUITES.register(TaskSuite("builtin_gpu", problems))
