"""What a task suite is: a name and where its problem files come from (file names only: Snakemake
lists the tasks while it parses the workflow, so nothing here imports torch or reads a problem)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vegtts.registry import Registry

# KernelBench's file names: <number>_<name>.py
KERNELBENCH_FILE = re.compile(r"^(\d+)_(.+)\.py$")


@dataclass(frozen=True)
class ProblemFile:
    task_id: str
    path: Path
    default_name: str  # used when the module has no docstring


def natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def as_is(raw: Any, suite_cfg: dict[str, Any]) -> str:
    return str(raw)


@dataclass(frozen=True)
class TaskSuite:
    name: str  # the value of tasks.suite
    problems: Callable[[dict[str, Any]], dict[str, ProblemFile]]  # the tasks block -> its problems by task id, in order
    default_ids: tuple[str, ...] | None = None  # what tasks.ids "default" selects (None: every problem)
    canonical_id: Callable[[Any, dict[str, Any]], str] = as_is  # an id as written in tasks.ids -> its task id
    split_ids: Callable[[str, dict[str, Any]], list[Any]] | None = None  # a split name in tasks.ids -> the ids it names
    on_select_all: Callable[[dict[str, Any], int], None] | None = None  # called when every problem is selected


SUITES: Registry[TaskSuite] = Registry("task suite", "tasks.suite")


def packaged_problems(folder: Path) -> dict[str, ProblemFile]:
    """The problem files of a folder in this package: task id = file stem."""
    files = sorted(folder.glob("*.py"), key=lambda p: natural_key(p.stem))
    return {p.stem: ProblemFile(p.stem, p, p.stem.replace("_", " ")) for p in files if not p.name.startswith("_")}


def suite_path(suite_cfg: dict[str, Any], suite: str) -> Path:
    """tasks.path, which must be a folder."""
    raw = suite_cfg.get("path")
    if not raw:
        raise ValueError(f"task suite {suite!r} needs a 'path' (folder of problem files)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(f"task suite {suite!r}: path {str(path)!r} is not a folder")
    return path
