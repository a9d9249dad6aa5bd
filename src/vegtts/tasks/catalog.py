"""Finding and parsing problem files: cheap, and never imports torch.

Snakemake calls `list_task_ids` while it parses the workflow, so everything here works on the
source text with `ast` only.  A problem file follows the KernelBench convention: a module-level
`class Model(nn.Module)`, `get_inputs()` and `get_init_inputs()`.  Optional module constants
read from the source: a docstring (first line = name, rest = description), `TAGS` (list of str),
`ATOL` and `RTOL` (floats: the task's own fp32 tolerances), `ATOL_SCALED` (bool: the absolute
tolerance grows with max |ref|, for outputs that are large sums of cancelling terms),
`TOLERANCE_REASON` (str: why; required with ATOL_SCALED) and `VARIED_INPUTS` (bool, default True:
whether the evaluator may add a correctness trial on signed, wider inputs; False where the
reference only means something on get_inputs' own distribution).
"""

from __future__ import annotations

import ast
import logging
from typing import Any

from vegtts.io import sha256_text
from vegtts.records import TaskSpec
from vegtts.tasks.shapes import assign_constants, scaled_batch, table_constants
from vegtts.tasks.splits import SPLIT_NAMES
from vegtts.tasks.suites import SUITES, ProblemFile, TaskSuite

log = logging.getLogger(__name__)

# fp32 tolerances of every suite, as KernelBench's current harness (src/kernelbench/eval.py,
# get_tolerance_for_precision: fp32 atol = rtol = 1e-4; fp16/bf16 1e-2, applied in
# evaluate/compare.py).  KernelBench v0/v0.1 used 1e-2 for fp32: `tasks.atol`/`tasks.rtol`
# reproduce that.  Not scaled by the output's magnitude (a task may opt in: ATOL_SCALED).
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


def _selected(suite_cfg: dict[str, Any]) -> tuple[TaskSuite, list[ProblemFile]]:
    suite = SUITES[suite_cfg.get("suite", "builtin")]
    available = suite.problems(suite_cfg)
    ids = suite_cfg.get("ids", "all")
    if ids == "default":
        ids = list(suite.default_ids) if suite.default_ids is not None else "all"
    if ids == "all":
        if suite.on_select_all is not None:
            suite.on_select_all(suite_cfg, len(available))
        return suite, list(available.values())
    if isinstance(ids, str) and ids in SPLIT_NAMES:
        if suite.split_ids is None:
            raise ValueError(f"tasks.ids {ids!r} names a split of KernelBench problems; it needs tasks.suite 'kernelbench', not {suite.name!r}")
        ids = suite.split_ids(ids, suite_cfg)
    if isinstance(ids, (str, int)):
        ids = [ids]
    wanted = list(dict.fromkeys(suite.canonical_id(i, suite_cfg) for i in ids))
    unknown = [i for i in wanted if i not in available]
    if unknown:
        splits = f" (or a split name: {list(SPLIT_NAMES)})" if suite.split_ids is not None else ""
        raise ValueError(
            f"unknown task id(s) {unknown} in suite {suite.name!r}; allowed ids: {list(available)}{splits}"
        )
    return suite, [available[i] for i in wanted]


def list_task_ids(suite_cfg: dict[str, Any]) -> list[str]:
    """Task ids a suite config selects, in a stable order.  Cheap: reads file names only.

    suite_cfg keys: `suite` ("builtin" | "dir" | "kernelbench", default builtin), `ids` (list,
    "all", "default": the builtin default mix, every problem for other suites, or for kernelbench
    a split name such as "paper_seed42_eval", tasks.splits; default all), `path`
    (dir/kernelbench), `level` (kernelbench).
    """
    return [pf.task_id for pf in _selected(suite_cfg)[1]]


def _literal(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            targets = [node.target.id]
        else:
            continue
        if name in targets:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                log.warning("module constant %s is not a literal; ignored", name)
                return None
    return None


def _find_class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


def forward_arg_names(tree: ast.Module, class_name: str = "Model") -> list[str]:
    """Argument names of `class_name.forward`, without self; `*args` appears as "*args"."""
    cls = _find_class(tree, class_name)
    if cls is None:
        raise ValueError(f"no module-level class {class_name!r}")
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "forward":
            args = node.args
            names = [a.arg for a in [*args.posonlyargs, *args.args]][1:]
            if args.vararg:
                names.append("*" + args.vararg.arg)
            names.extend(a.arg for a in args.kwonlyargs)
            return names
    raise ValueError(f"class {class_name!r} has no forward method")


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{what} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def _tolerance_constants(tree: ast.Module, task_id: str, default_atol: float, default_rtol: float) -> dict[str, Any]:
    """TaskSpec's tolerance fields from ATOL, RTOL, ATOL_SCALED, TOLERANCE_REASON, VARIED_INPUTS."""
    atol, rtol = _literal(tree, "ATOL"), _literal(tree, "RTOL")
    scaled = _literal(tree, "ATOL_SCALED")
    reason = _literal(tree, "TOLERANCE_REASON")
    varied = _literal(tree, "VARIED_INPUTS")
    for name, value in (("ATOL_SCALED", scaled), ("VARIED_INPUTS", varied)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"task {task_id!r}: {name} must be True or False, got {value!r}")
    if reason is not None and not (isinstance(reason, str) and reason.strip()):
        raise ValueError(f"task {task_id!r}: TOLERANCE_REASON must be a non-empty string, got {reason!r}")
    if scaled and not reason:
        raise ValueError(
            f"task {task_id!r}: ATOL_SCALED = True loosens the tolerance with the output's magnitude; "
            "say why in TOLERANCE_REASON (e.g. outputs are sums of thousands of cancelling terms)"
        )
    return {
        "atol": _positive_number(atol, f"task {task_id!r}: ATOL") if atol is not None else float(default_atol),
        "rtol": _positive_number(rtol, f"task {task_id!r}: RTOL") if rtol is not None else float(default_rtol),
        "atol_scaled": bool(scaled),
        "tolerance_reason": (reason or "").strip(),
        "varied_inputs": True if varied is None else varied,
    }


def parse_problem_source(
    source: str,
    task_id: str,
    suite: str,
    default_name: str = "",
    default_atol: float = DEFAULT_ATOL,
    default_rtol: float = DEFAULT_RTOL,
) -> TaskSpec:
    """Build a TaskSpec from a problem's source text (no execution)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"task {task_id!r}: reference does not parse: {exc}") from exc
    missing = [
        n
        for n in ("get_inputs", "get_init_inputs")
        if not any(isinstance(node, ast.FunctionDef) and node.name == n for node in tree.body)
    ]
    if missing:
        raise ValueError(f"task {task_id!r}: missing module-level function(s) {missing}")
    try:
        forward_args = forward_arg_names(tree)
    except ValueError as exc:
        raise ValueError(f"task {task_id!r}: {exc}") from exc

    doc = (ast.get_docstring(tree) or "").strip()
    first, _, rest = doc.partition("\n")
    tags = _literal(tree, "TAGS") or []
    if not (isinstance(tags, (list, tuple)) and all(isinstance(t, str) for t in tags)):
        raise ValueError(f"task {task_id!r}: TAGS must be a list of strings, got {tags!r}")
    tolerance = _tolerance_constants(tree, task_id, default_atol, default_rtol)
    return TaskSpec(
        task_id=task_id,
        name=first.strip() or default_name or task_id,
        suite=suite,
        source=source,
        source_sha256=sha256_text(source),
        forward_args=forward_args,
        description=rest.strip(),
        tags=list(tags),
        **tolerance,
    )


def load_tasks(suite_cfg: dict[str, Any]) -> list[TaskSpec]:
    """Resolve a suite config into TaskSpecs (source read and parsed; nothing executed).

    Tolerances (fp32; fp16/bf16 outputs get at least 1e-2): a module's ATOL/RTOL win; otherwise
    suite_cfg `atol`/`rtol` if given (null = default); otherwise KernelBench's current 1e-4.
    """
    suite, problems = _selected(suite_cfg)
    atol, rtol = (
        default if suite_cfg.get(key) is None else _positive_number(suite_cfg[key], f"tasks.{key}")
        for key, default in (("atol", DEFAULT_ATOL), ("rtol", DEFAULT_RTOL))
    )
    specs = []
    for pf in problems:
        source = apply_shape_settings(pf.path.read_text(encoding="utf-8"), pf.task_id, suite_cfg)
        specs.append(parse_problem_source(source, pf.task_id, suite.name, pf.default_name, atol, rtol))
    return specs


def builtin_task_ids() -> list[str]:
    return list(SUITES["builtin"].problems({}))


def _overrides_for(task_id: str, suite_cfg: dict[str, Any]) -> dict[str, Any]:
    overrides = suite_cfg.get("shape_overrides") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"tasks.shape_overrides must map task id -> {{CONSTANT: value}}, got {overrides!r}")
    out: dict[str, Any] = {}
    suite = SUITES[suite_cfg.get("suite", "builtin")]
    for key, values in overrides.items():
        if suite.canonical_id(key, suite_cfg) != task_id:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"tasks.shape_overrides[{key!r}] must map constant names to positive ints (or lists of them), got {values!r}")
        out.update(values)
    return out


def apply_shape_settings(source: str, task_id: str, suite_cfg: dict[str, Any]) -> str:
    """The problem source with `shapes`, `shape_scale` and `shape_overrides` applied, in that order.

    `shapes`: "full" (the problem's own), "reduced" (the packaged table of CPU-sized KernelBench
    shapes, SHAPE_TABLE) or the path of such a table; `shape_scale` multiplies the batch-role
    constants (tasks.shapes module docstring); `shape_overrides` ({task id or KernelBench number:
    {CONSTANT: int, or list of ints for a tuple constant}}) sets any shape constant.  Values are
    appended as assignments (derived constants recomputed), so the changed source is the task's
    source and its sha256 (and every cache key) changes too.
    """
    scale = suite_cfg.get("shape_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"tasks.shape_scale must be a number > 0, got {scale!r}")
    values = table_constants(suite_cfg.get("shapes", "full"), task_id, source)
    if scale != 1.0:
        scaled = assign_constants(source, values, f"tasks.shapes for {task_id!r}", "tasks.shapes")
        values = {**values, **scaled_batch(scaled, scale)}
    values.update(_overrides_for(task_id, suite_cfg))
    return assign_constants(source, values, f"tasks.shape_overrides for {task_id!r}", "tasks.shapes / shape_scale / shape_overrides")
