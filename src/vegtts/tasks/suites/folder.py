"""dir: any folder of KernelBench-format problem files (tasks.path); task id = file stem, made safe."""

from __future__ import annotations

import re
from typing import Any

from vegtts.tasks.suites.base import KERNELBENCH_FILE, SUITES, ProblemFile, TaskSuite, natural_key, suite_path

_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def problems(suite_cfg: dict[str, Any]) -> dict[str, ProblemFile]:
    folder = suite_path(suite_cfg, "dir")
    out: dict[str, ProblemFile] = {}
    for p in sorted(folder.glob("*.py"), key=lambda p: natural_key(p.stem)):
        if p.name.startswith("_"):
            continue
        task_id = _ID_SAFE.sub("_", p.stem)
        if task_id in out:
            raise ValueError(f"dir suite {str(folder)!r}: two files map to task id {task_id!r}")
        match = KERNELBENCH_FILE.match(p.name)
        out[task_id] = ProblemFile(task_id, p, match.group(2) if match else p.stem)
    return out


SUITES.register(TaskSuite("dir", problems))
