"""kernelbench: one level of a local KernelBench checkout (tasks.path, tasks.level); task ids
kb<level>_<number>, selectable by number or by a split name (vegtts.tasks.splits)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vegtts.tasks.splits import split_problem_numbers
from vegtts.tasks.suites.base import KERNELBENCH_FILE, SUITES, ProblemFile, TaskSuite, suite_path

log = logging.getLogger(__name__)


def _level(suite_cfg: dict[str, Any]) -> int:
    level = suite_cfg.get("level")
    if not isinstance(level, int) or isinstance(level, bool):
        raise ValueError(f"kernelbench suite needs an integer 'level', got {level!r}")
    return level


def _level_dir(root: Path, level: int) -> Path:
    for candidate in (root / "KernelBench" / f"level{level}", root / f"level{level}"):
        if candidate.is_dir():
            return candidate
    raise ValueError(
        f"kernelbench suite: no folder {str(root / 'KernelBench' / f'level{level}')!r} "
        "(path must be a KernelBench checkout)"
    )


def problems(suite_cfg: dict[str, Any]) -> dict[str, ProblemFile]:
    root = suite_path(suite_cfg, "kernelbench")
    level = _level(suite_cfg)
    found: list[tuple[int, ProblemFile]] = []
    for p in _level_dir(root, level).glob("*.py"):
        match = KERNELBENCH_FILE.match(p.name)
        if match:
            num = int(match.group(1))
            found.append((num, ProblemFile(f"kb{level}_{num}", p, match.group(2))))
    found.sort(key=lambda item: item[0])
    return {pf.task_id: pf for _, pf in found}


def canonical_id(raw: Any, suite_cfg: dict[str, Any]) -> str:
    """Ids may be given as 19, "19" or "kb1_19"."""
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        return f"kb{suite_cfg['level']}_{int(raw)}"
    return str(raw)


def split_ids(split: str, suite_cfg: dict[str, Any]) -> list[Any]:
    return split_problem_numbers(split, suite_cfg["level"])


_WARNED_FULL_SIZE: set[str] = set()


def warn_full_size(suite_cfg: dict[str, Any], count: int) -> None:
    """One warning per process when a whole KernelBench level is selected at its own (GPU) sizes."""
    if suite_cfg.get("shapes", "full") != "full" or suite_cfg.get("shape_scale", 1.0) != 1.0 or suite_cfg.get("shape_overrides"):
        return
    key = f"{suite_cfg.get('path')}:{suite_cfg.get('level')}"
    if key in _WARNED_FULL_SIZE:
        return
    _WARNED_FULL_SIZE.add(key)
    log.warning(
        "tasks: all %d problems of KernelBench level %s at KernelBench's own sizes (sized for GPUs: inputs up to "
        "17 GB, seconds per forward on a CPU); set tasks.shapes: reduced for CPU-sized shapes and tasks.ids to a "
        "list or a split (e.g. paper_seed42_eval)", count, suite_cfg.get("level"),
    )


SUITES.register(TaskSuite("kernelbench", problems, canonical_id=canonical_id, split_ids=split_ids, on_select_all=warn_full_size))
