"""Giving a candidate the reference's weights when it names its parameters differently.

The evaluator copies the reference model's state_dict into the candidate, so a candidate that
subclasses `Model` (or reuses its attribute names) computes with exactly the reference's
weights.  KernelBench accepts candidates that build their own layers under other names (its
harness reseeds before constructing each model instead), e.g. `self.w = nn.Parameter(...)` for
the reference's `self.linear.weight`.  `reference_state_for` maps the reference's tensors onto
the candidate's names where that is unambiguous:

1. same names: the reference's state as it is (shapes must agree);
2. the same number of tensors whose (shape, dtype) agree position by position (both in
   registration order): by position;
3. otherwise, if every (shape, dtype) occurs exactly once on each side: by shape.

Anything else (different counts, shapes the reference does not have, or equal shapes in a
different order) raises `UnmappedParameters` with what could not be matched; the evaluator
reports it as `rejected` with guard `unmapped_parameters`, not as a compile error.  Pure
functions on {name: tensor} dicts; nothing here runs candidate code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

GUARD = "unmapped_parameters"


class UnmappedParameters(ValueError):
    """The candidate's parameters and buffers cannot be matched to the reference's."""

    guard = GUARD


def _signature(tensor: Any) -> tuple[tuple[int, ...], str]:
    return tuple(tensor.shape), str(tensor.dtype).replace("torch.", "")


def _describe(state: Mapping[str, Any]) -> str:
    items = [f"{name} {list(_signature(t)[0])}" for name, t in state.items()]
    return ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "") if items else "none"


def reference_state_for(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """The reference's tensors keyed by the candidate's state_dict names (rules in the module doc).

    `reference`: the reference model's state_dict; `candidate`: the freshly built candidate's
    state_dict (only its names, shapes and dtypes are read).  Raises UnmappedParameters.
    """
    ref_sigs = {name: _signature(t) for name, t in reference.items()}
    cand_sigs = {name: _signature(t) for name, t in candidate.items()}
    if set(ref_sigs) == set(cand_sigs):
        wrong = [n for n in ref_sigs if ref_sigs[n] != cand_sigs[n]]
        if wrong:
            raise UnmappedParameters(
                f"ModelNew's {wrong} have other shapes or dtypes than the reference's "
                f"({', '.join(f'{n}: {list(cand_sigs[n][0])} vs {list(ref_sigs[n][0])}' for n in wrong[:4])})"
            )
        return dict(reference)
    ref_names, cand_names = list(ref_sigs), list(cand_sigs)
    if len(ref_names) != len(cand_names):
        raise UnmappedParameters(
            f"ModelNew has {len(cand_names)} parameter/buffer tensor(s), the reference {len(ref_names)}, under other "
            f"names; the reference's weights cannot be given to it (reference: {_describe(reference)}; "
            f"ModelNew: {_describe(candidate)})"
        )
    if all(ref_sigs[r] == cand_sigs[c] for r, c in zip(ref_names, cand_names)):
        return {c: reference[r] for r, c in zip(ref_names, cand_names)}
    ref_count, cand_count = Counter(ref_sigs.values()), Counter(cand_sigs.values())
    if ref_count != cand_count:
        missing = sorted({f"{list(s)} {d}" for (s, d), n in ref_count.items() if cand_count.get((s, d), 0) < n})
        raise UnmappedParameters(
            f"ModelNew's parameters under other names do not have the reference's shapes "
            f"(the reference has {missing} that ModelNew lacks; reference: {_describe(reference)}; ModelNew: {_describe(candidate)})"
        )
    repeated = sorted({f"{list(s)} {d}" for (s, d), n in ref_count.items() if n > 1})
    if repeated:
        raise UnmappedParameters(
            f"ModelNew registers its parameters in another order than the reference and several have the "
            f"same shape ({repeated}): which reference tensor goes where is ambiguous"
        )
    by_signature = {sig: name for name, sig in ref_sigs.items()}
    return {c: reference[by_signature[cand_sigs[c]]] for c in cand_names}


def load_reference_state(model: Any, reference: Mapping[str, Any], violation: Any) -> None:
    """`model.load_state_dict` of the reference's tensors under the model's own names (strict).

    Where they cannot be mapped, raises `violation(GUARD, reason)`: the caller's guard exception
    (the CPU child's and the CUDA worker's GuardViolation), so the verdict is `rejected` with the
    reason, not a compile error.
    """
    try:
        state = reference_state_for(reference, model.state_dict())
    except UnmappedParameters as exc:
        raise violation(exc.guard, str(exc)) from None
    model.load_state_dict(state, strict=True)
