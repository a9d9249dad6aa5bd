"""Distinct programs: identical code is one piece of evidence, not many.

The evaluator runs identical programs of a task once, and every copy shares that one verdict and
timing.  A statistic over samples therefore counts one measurement as many (the default run's 88
correct samples are about 21 programs).  `distinct_programs` collapses samples to one row per
(policy, task, program); correlations, quartiles and per-program figures are computed on those rows.

`reference_copy`: a program whose ModelNew is the reference Model itself (same forward, same
__init__ or inherited), compared as syntax trees, so formatting and comments do not matter.  Its
"speedup" measures the timer, not the program.  The evaluator may set a `reference_copy` flag
itself; either source marks the sample.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PROGRAM_KEYS = ["policy", "task_id", "code_sha256"]
REFERENCE_COPY_FLAG = "reference_copy"


def _class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _body_dump(fn: ast.FunctionDef, rename: dict[str, str]) -> str:
    """The function's argument names and defaults and its body without a docstring, names in
    `rename` replaced (type annotations do not matter)."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    module = ast.Module(body=body, type_ignores=[])
    for node in ast.walk(module):
        if isinstance(node, ast.Name) and node.id in rename:
            node.id = rename[node.id]
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [f"*{a.vararg.arg}" if a.vararg else "",
                                                                          f"**{a.kwarg.arg}" if a.kwarg else ""]
    defaults = [ast.dump(d, annotate_fields=False) for d in (*a.defaults, *a.kw_defaults) if d is not None]
    # argument names and defaults, not annotations: the body format writes `def forward(self, x)`
    return repr((names, defaults)) + ast.dump(module, annotate_fields=False)


def is_reference_copy(program: str) -> bool:
    """True if the program's ModelNew is the reference Model: forward equal as syntax trees, and
    __init__ equal too (or ModelNew inherits Model's and defines none)."""
    if not program:
        return False
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return False
    ref, new = _class(tree, "Model"), _class(tree, "ModelNew")
    if ref is None or new is None:
        return False
    ref_fwd, new_fwd = _method(ref, "forward"), _method(new, "forward")
    if ref_fwd is None or new_fwd is None:
        return False
    rename = {"ModelNew": "Model"}
    if _body_dump(ref_fwd, rename) != _body_dump(new_fwd, rename):
        return False
    new_init, ref_init = _method(new, "__init__"), _method(ref, "__init__")
    if new_init is None:
        return any(isinstance(b, ast.Name) and b.id == "Model" for b in new.bases)
    return ref_init is not None and _body_dump(ref_init, rename) == _body_dump(new_init, rename)


def reference_copy_column(programs: Iterable[str], flags: Iterable[str] | None = None) -> np.ndarray:
    """Per sample: the evaluator's `reference_copy` flag, or the syntax-tree comparison (each
    distinct program parsed once)."""
    programs = [str(p or "") for p in programs]
    seen: dict[str, bool] = {}
    for p in programs:
        if p not in seen:
            seen[p] = is_reference_copy(p)
    derived = np.array([seen[p] for p in programs], dtype=bool)
    if flags is None:
        return derived
    flagged = np.array([REFERENCE_COPY_FLAG in str(f or "").split(",") for f in flags], dtype=bool)
    return derived | flagged


def distinct_programs(samples: pd.DataFrame, value_columns: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (policy, task, program) of the samples that have code.

    Verdict columns (correct, speedup, fast_1, fast_1_sig, status, guard, reference_copy) are the
    program's (all copies share one evaluation); `value_columns` (NLL variants, lengths: copies may
    differ in tokens outside the code) are means over the copies.  n_copies counts samples, n_seeds
    the sampling seeds the program appeared in.
    """
    if "code_sha256" not in samples:  # no program identity: every sample counts as its own program
        log.warning("samples carry no code_sha256: every sample is counted as a distinct program")
        samples = samples.assign(code_sha256=samples["policy"].astype(str) + "|" + samples["seed"].astype(str) + "|"
                                 + samples["task_id"].astype(str) + "|" + samples["sample_idx"].astype(str))
    has_code = samples["code_sha256"].fillna("").astype(str).ne("")
    d = samples[has_code]
    shared = [c for c in ("correct", "speedup", "speedup_lo", "fast_1", "fast_1_sig", "status", "guard",
                          "reference_copy", "error") if c in d]
    agg: dict[str, tuple[str, str]] = {c: (c, "first") for c in shared}
    agg.update({c: (c, "mean") for c in value_columns if c in d})
    agg["n_copies"] = ("sample_idx", "size")
    agg["n_seeds"] = ("seed", "nunique")
    if d.empty:
        return pd.DataFrame(columns=[*PROGRAM_KEYS, *agg])
    out = d.groupby(PROGRAM_KEYS, sort=True).agg(**agg).reset_index()
    return out
