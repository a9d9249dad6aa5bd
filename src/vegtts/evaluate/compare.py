"""Comparing a candidate's output with the reference's (run in the trusted parent).

Tolerance (per element, floating dtypes), as KernelBench's current harness (``torch.allclose``)::

    |cand - ref| <= atol + rtol * |ref|

``atol``/``rtol`` are the task's fp32 (and fp64) tolerances, 1e-4 each by default (KernelBench's
``get_tolerance_for_precision``: fp32 1e-4, fp16/bf16 1e-2); for float16/bfloat16 outputs they
are raised to at least ``LOW_PRECISION_TOL`` (1e-2).  The tolerance is *not* loosened by the
output's magnitude: an ``atol * max|ref|`` term let a cumsum off by a whole element (165 allowed)
or an all-zeros softmax pass.  A task whose outputs are legitimately large sums of cancelling
terms may opt in with the module constant ``ATOL_SCALED = True`` (and ``TOLERANCE_REASON``): then
the absolute term is ``atol * max(1, max |ref|)``.  The evaluator's varied trial (signed inputs
scaled up to a peak of 4, tasks/runtime.py) is compared that way too: its magnitudes are the
evaluator's choice, not the task's, and a K-term product of two inputs scaled by 4 carries 16x
the reassociation error of the plain trials; its purpose is reaching branches (negative inputs,
clamps), whose bugs are as large as the output, while the plain trials keep the strict check.  NaN must appear exactly where the reference
has NaN, +-inf exactly where it has the same inf.  Integer and bool outputs must be equal.  Type,
shape and dtype must match exactly; Python scalars compare with the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# KernelBench's harness (src/kernelbench/eval.py, get_tolerance_for_precision, HEAD 423217d):
# fp32 1e-4 (torchbench's), fp16/bf16 1e-2 (torchbench's 1e-3 "if not too strict").
LOW_PRECISION_TOL = 1e-2


@dataclass
class Comparison:
    ok: bool
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    error: str = ""

    def merge(self, other: Comparison) -> Comparison:
        return Comparison(
            self.ok and other.ok,
            max(self.max_abs_err, other.max_abs_err),
            max(self.max_rel_err, other.max_rel_err),
            self.error or other.error,
        )


def tolerances(dtype: torch.dtype, atol: float, rtol: float) -> tuple[float, float]:
    """(atol, rtol) for an output of `dtype`, from the task's fp32 values."""
    if dtype in _LOW_PRECISION:
        return max(atol, LOW_PRECISION_TOL), max(rtol, LOW_PRECISION_TOL)
    return atol, rtol


def _compare_tensors(ref: torch.Tensor, out: Any, atol: float, rtol: float, where: str, atol_scaled: bool = False) -> Comparison:
    if type(out) is not torch.Tensor:
        return Comparison(False, math.inf, math.inf, f"{where}: expected a tensor, got {type(out).__name__}")
    if out.shape != ref.shape:
        return Comparison(False, math.inf, math.inf, f"{where}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if out.dtype != ref.dtype:
        return Comparison(False, math.inf, math.inf, f"{where}: dtype {out.dtype} != reference {ref.dtype}")
    if not (ref.is_floating_point() or ref.is_complex()):
        if torch.equal(out, ref):
            return Comparison(True)
        wrong = int((out != ref).sum())
        return Comparison(False, math.inf, math.inf, f"{where}: {wrong} of {ref.numel()} elements differ")
    if ref.numel() == 0:
        return Comparison(True)
    if torch.equal(out, ref):  # bit-identical (the common honest case): one pass instead of a dozen
        return Comparison(True)
    atol, rtol = tolerances(ref.dtype, atol, rtol)
    work = torch.float64 if ref.dtype == torch.float64 else torch.float32
    r = ref if ref.is_complex() else ref.to(work)
    o = out if out.is_complex() else out.to(work)
    if bool(torch.isfinite(r).all()) and bool(torch.isfinite(o).all()):
        return _within(r, o, atol, rtol, where, atol_scaled)  # the common case: no masking copies
    r_nan, o_nan = torch.isnan(r), torch.isnan(o)
    if bool((o_nan & ~r_nan).any()):
        return Comparison(False, math.nan, math.nan, f"{where}: {int((o_nan & ~r_nan).sum())} NaN where the reference has none")
    if bool((r_nan & ~o_nan).any()):
        return Comparison(False, math.inf, math.inf, f"{where}: {int((r_nan & ~o_nan).sum())} values where the reference has NaN")
    r_inf, o_inf = torch.isinf(r), torch.isinf(o)
    special = r_inf | o_inf
    if bool(special.any()) and not torch.equal(r[special], o[special]):
        return Comparison(False, math.inf, math.inf, f"{where}: infinities differ from the reference")
    finite = ~(r_nan | special)
    if not bool(finite.any()):
        return Comparison(True)
    return _within(r[finite], o[finite], atol, rtol, where, atol_scaled)


def _within(r: torch.Tensor, o: torch.Tensor, atol: float, rtol: float, where: str, atol_scaled: bool) -> Comparison:
    abs_ref = r.abs()
    scale = max(1.0, float(abs_ref.max())) if atol_scaled else 1.0
    diff = torch.sub(o, r).abs_()
    bound = abs_ref.mul(rtol).add_(atol * scale)
    bad = int((diff > bound).sum())
    max_abs = float(diff.max())
    max_rel = float(diff.div_(abs_ref.clamp_min_(atol * scale)).max())
    if bad:
        absolute = f"atol {atol:g} x scale {scale:.3g}" if atol_scaled else f"atol {atol:g}"
        return Comparison(
            False, max_abs, max_rel,
            f"{where}: {bad} of {r.numel()} values out of tolerance (max abs err {max_abs:.3g}, {absolute}, rtol {rtol:g})",
        )
    return Comparison(True, max_abs, max_rel)


def compare_outputs(
    ref: Any, out: Any, atol: float, rtol: float, where: str = "output", *, atol_scaled: bool = False
) -> Comparison:
    """Recursive comparison of (nests of) tensors and Python scalars.

    `atol`/`rtol`: the task's fp32 tolerances (raised for fp16/bf16 outputs); `atol_scaled`: the
    task's opt-in to an absolute term scaled by max(1, max |ref|) (TaskSpec.atol_scaled).
    """
    if isinstance(ref, torch.Tensor):
        return _compare_tensors(ref, out, atol, rtol, where, atol_scaled)
    if isinstance(ref, (list, tuple)):
        if type(out) is not type(ref) or len(out) != len(ref):
            got = f"{type(out).__name__} of {len(out)}" if isinstance(out, (list, tuple)) else type(out).__name__
            return Comparison(False, math.inf, math.inf, f"{where}: expected {type(ref).__name__} of {len(ref)}, got {got}")
        result = Comparison(True)
        for i, (r, o) in enumerate(zip(ref, out)):
            result = result.merge(compare_outputs(r, o, atol, rtol, f"{where}[{i}]", atol_scaled=atol_scaled))
            if not result.ok:
                return result
        return result
    if ref is None or isinstance(ref, (bool, int, str)):
        ok = type(out) is type(ref) and out == ref
        return Comparison(ok, 0.0 if ok else math.inf, 0.0 if ok else math.inf, "" if ok else f"{where}: {out!r} != {ref!r}")
    if isinstance(ref, float):
        if type(out) is not float:
            return Comparison(False, math.inf, math.inf, f"{where}: expected float, got {type(out).__name__}")
        return _compare_tensors(
            torch.tensor(ref, dtype=torch.float64), torch.tensor(out, dtype=torch.float64), atol, rtol, where, atol_scaled
        )
    return Comparison(False, math.inf, math.inf, f"{where}: reference output type {type(ref).__name__} is not comparable")


def same_values(a: Any, b: Any) -> bool:
    """Exact equality (NaN equals NaN) of (nests of) tensors and scalars: the inputs-unchanged check."""
    if isinstance(a, torch.Tensor):
        if type(b) is not torch.Tensor or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if torch.equal(a, b):
            return True
        if a.is_floating_point() or a.is_complex():
            return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b
