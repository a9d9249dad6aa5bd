"""Comparing a candidate's output with the reference's (run in the trusted parent).

Tolerance (per element, floating dtypes)::

    |cand - ref| <= atol * scale + rtol * |ref|,   scale = max(1, max |ref| over finite elements)

``atol``/``rtol`` come from the task (fp32 defaults 1e-4); for float16/bfloat16 outputs they are
raised to at least 1e-2.  The ``scale`` factor makes the absolute term relative to the output's
magnitude (a sum of 10^4 fp32 values may legitimately differ by ~1e-4 * 10^4 after reordering)
while never dropping below ``atol`` for small outputs.  NaN must appear exactly where the
reference has NaN, +-inf exactly where it has the same inf.  Integer and bool outputs must be
equal.  Type, shape and dtype must match exactly; Python scalars compare with the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass
class Comparison:
    ok: bool
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    error: str = ""

    def merge(self, other: "Comparison") -> "Comparison":
        return Comparison(
            self.ok and other.ok,
            max(self.max_abs_err, other.max_abs_err),
            max(self.max_rel_err, other.max_rel_err),
            self.error or other.error,
        )


def tolerances(dtype: torch.dtype, atol: float, rtol: float) -> tuple[float, float]:
    if dtype in _LOW_PRECISION:
        return max(atol, 1e-2), max(rtol, 1e-2)
    return atol, rtol


def _compare_tensors(ref: torch.Tensor, out: Any, atol: float, rtol: float, where: str) -> Comparison:
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
        return _within(r, o, atol, rtol, where)  # the common case: no masking copies
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
    return _within(r[finite], o[finite], atol, rtol, where)


def _within(r: torch.Tensor, o: torch.Tensor, atol: float, rtol: float, where: str) -> Comparison:
    abs_ref = r.abs()
    scale = max(1.0, float(abs_ref.max()))
    diff = torch.sub(o, r).abs_()
    bound = abs_ref.mul(rtol).add_(atol * scale)
    bad = int((diff > bound).sum())
    max_abs = float(diff.max())
    max_rel = float(diff.div_(abs_ref.clamp_min_(atol * scale)).max())
    if bad:
        return Comparison(
            False, max_abs, max_rel,
            f"{where}: {bad} of {r.numel()} values out of tolerance (max abs err {max_abs:.3g}, "
            f"atol {atol:g} x scale {scale:.3g}, rtol {rtol:g})",
        )
    return Comparison(True, max_abs, max_rel)


def compare_outputs(ref: Any, out: Any, atol: float, rtol: float, where: str = "output") -> Comparison:
    """Recursive comparison of (nests of) tensors and Python scalars."""
    if isinstance(ref, torch.Tensor):
        return _compare_tensors(ref, out, atol, rtol, where)
    if isinstance(ref, (list, tuple)):
        if type(out) is not type(ref) or len(out) != len(ref):
            got = f"{type(out).__name__} of {len(out)}" if isinstance(out, (list, tuple)) else type(out).__name__
            return Comparison(False, math.inf, math.inf, f"{where}: expected {type(ref).__name__} of {len(ref)}, got {got}")
        result = Comparison(True)
        for i, (r, o) in enumerate(zip(ref, out)):
            result = result.merge(compare_outputs(r, o, atol, rtol, f"{where}[{i}]"))
            if not result.ok:
                return result
        return result
    if ref is None or isinstance(ref, (bool, int, str)):
        ok = type(out) is type(ref) and out == ref
        return Comparison(ok, 0.0 if ok else math.inf, 0.0 if ok else math.inf, "" if ok else f"{where}: {out!r} != {ref!r}")
    if isinstance(ref, float):
        if type(out) is not float:
            return Comparison(False, math.inf, math.inf, f"{where}: expected float, got {type(out).__name__}")
        return _compare_tensors(torch.tensor(ref, dtype=torch.float64), torch.tensor(out, dtype=torch.float64), atol, rtol, where)
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
