"""Task suites: built-in CPU problems, a KernelBench checkout, or any folder of problems.

Importing this package (and `list_task_ids`, `load_tasks`) does not import torch: Snakemake
calls them while it parses the workflow.  Running a reference (`make_model`, `make_inputs`,
`validate_task`) imports torch lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegtts.io import code_fingerprint, provenance, read_json, write_json
from vegtts.records import TaskSpec
from vegtts.tasks.catalog import (
    builtin_task_ids,
    list_task_ids,
    load_tasks,
    parse_problem_source,
)
from vegtts.tasks.runtime import (
    load_module_from_source,
    load_reference_module,
    make_init_inputs,
    make_inputs,
    make_model,
    solution_program,
)
from vegtts.tasks.suites import SUITES
from vegtts.tasks.suites.builtin import BUILTIN_DIR, DEFAULT_TASK_IDS
from vegtts.tasks.validate import screen_tasks, validate_suite, validate_task

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_TASK_IDS",
    "SUITES",
    "builtin_task_ids",
    "list_task_ids",
    "load_module_from_source",
    "load_reference_module",
    "load_tasks",
    "make_init_inputs",
    "make_inputs",
    "make_model",
    "parse_problem_source",
    "read_tasks_json",
    "resolve_tasks_to_json",
    "screen_tasks",
    "solution_program",
    "validate_suite",
    "validate_task",
]


def resolve_tasks_to_json(suite_cfg: dict[str, Any], out_path: str | Path, validate: bool = True) -> list[TaskSpec]:
    """Resolve `suite_cfg` and write {"tasks": [...], "provenance": {...}} atomically.

    With `validate`, every problem is screened first (validate.screen_tasks: constant or tiny
    outputs, ignored inputs, nondeterminism, ...); each task's findings go into its `validation`
    list ([] = fine) and a warning is logged per degenerate problem.  Problems are reported, not
    dropped: the experiment decides what to do with them.
    """
    specs = load_tasks(suite_cfg)
    findings = screen_tasks(specs) if validate else {}
    tasks = []
    for spec in specs:
        entry = spec.to_dict()
        if validate:
            entry["validation"] = findings.get(spec.task_id, [])
        tasks.append(entry)
    write_json(
        out_path,
        {
            "tasks": tasks,
            "provenance": provenance(suite_cfg=dict(suite_cfg), tasks_code=code_fingerprint("tasks"), validated=validate),
        },
        manifest=True,  # its digest beside it: readers verify it (vegtts.io.verify_artifact)
    )
    return specs


def read_tasks_json(path: str | Path) -> dict[str, TaskSpec]:
    """Task specs written by resolve_tasks_to_json, keyed by task id, in file order."""
    data = read_json(path)
    return {d["task_id"]: TaskSpec.from_dict(d) for d in data["tasks"]}
