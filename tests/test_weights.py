"""Reference weights for candidates that name their parameters differently (evaluate/weights.py)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

from vegtts.evaluate import EvalSettings, evaluate_task
from vegtts.evaluate.weights import GUARD, UnmappedParameters, load_reference_state, reference_state_for
from vegtts.io import sha256_text
from vegtts.records import TaskSpec


def state(**shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """{name: tensor of that shape}, values distinct per name (so a wrong mapping shows)."""
    return {name: torch.full(shape, float(i)) for i, (name, shape) in enumerate(shapes.items())}


def test_same_names_are_used_as_they_are():
    ref = state(**{"lin.weight": (4, 8), "lin.bias": (4,)})
    out = reference_state_for(ref, state(**{"lin.weight": (4, 8), "lin.bias": (4,)}))
    assert out == ref


def test_other_names_in_the_same_order_map_by_position():
    ref = state(**{"lin.weight": (4, 8), "lin.bias": (4,), "lin2.weight": (4, 4)})
    cand = state(w1=(4, 8), b1=(4,), w2=(4, 4))
    out = reference_state_for(ref, cand)
    assert list(out) == ["w1", "b1", "w2"]
    assert out["w1"] is ref["lin.weight"] and out["b1"] is ref["lin.bias"] and out["w2"] is ref["lin2.weight"]


def test_other_order_with_unique_shapes_maps_by_shape():
    ref = state(**{"conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (10, 8)})
    cand = state(fc_w=(10, 8), kernel=(8, 3, 3, 3), kernel_bias=(8,))
    out = reference_state_for(ref, cand)
    assert out["fc_w"] is ref["fc.weight"] and out["kernel"] is ref["conv.weight"] and out["kernel_bias"] is ref["conv.bias"]


@pytest.mark.parametrize(
    "cand, fragment",
    [
        (state(w=(4, 8)), "has 1 parameter/buffer tensor(s), the reference 3"),  # dropped a tensor
        (state(x=(8, 4), y=(4,), z=(4, 4)), "lacks"),  # a transposed weight: shapes the reference does not have
        (state(b=(4,), w=(4, 4), v=(4, 4)), "ambiguous"),  # two (4, 4) tensors in another order
    ],
    ids=["count", "shape", "ambiguous"],
)
def test_unmappable_parameters_raise_with_the_reason(cand, fragment):
    ref = state(a=(4, 4), b=(4,), c=(4, 4))
    if fragment == "lacks":
        ref = state(w=(4, 8), b=(4,), w2=(4, 4))
    with pytest.raises(UnmappedParameters, match=re.escape(fragment)):
        reference_state_for(ref, cand)


def test_same_names_with_other_shapes_raise():
    with pytest.raises(UnmappedParameters, match="other shapes"):
        reference_state_for(state(w=(4, 8)), state(w=(8, 4)))


def test_load_reference_state_raises_the_callers_guard_exception():
    class Guard(Exception):
        def __init__(self, guard: str, detail: str) -> None:
            super().__init__(detail)
            self.guard = guard

    model = nn.Linear(8, 4)
    ref = {"w": torch.ones(4, 8), "b": torch.zeros(4)}  # other names, same order: mapped
    load_reference_state(model, ref, Guard)
    assert torch.equal(model.weight, torch.ones(4, 8)) and torch.equal(model.bias, torch.zeros(4))
    with pytest.raises(Guard) as err:
        load_reference_state(model, {"w": torch.ones(4, 8)}, Guard)
    assert err.value.guard == GUARD


# ----------------------------------------------------------------------------- through the evaluator

PROBLEM = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.relu(self.lin(x))


def get_inputs():
    return [torch.randn(16, 64)]


def get_init_inputs():
    return [64, 32]
'''

OWN_NAMES = '''
class ModelNew(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.empty(d_out))

    def forward(self, x):
        return torch.clamp_min(torch.addmm(self.bias, x, self.weight.t()), 0)
'''

DROPS_BIAS = '''
class ModelNew(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))

    def forward(self, x):
        return torch.relu(x @ self.weight.t())
'''

FAST = EvalSettings(correctness_trials=2, timing_rounds=3, calls_per_round=2, warmup_calls=1, bootstrap=100, timeout_s=30)


def evaluate(body: str):
    spec = TaskSpec(task_id="own_names", name="own names", suite="test", source=PROBLEM,
                    source_sha256=sha256_text(PROBLEM), forward_args=["x"])
    program = PROBLEM + "\n" + body
    return evaluate_task(spec, [(sha256_text(program), program)], FAST)[0]


def test_candidate_with_its_own_parameter_names_gets_the_reference_weights_and_passes():
    record = evaluate(OWN_NAMES)
    assert record.status == "ok", record.error  # before: compile_error (strict load_state_dict)


def test_unmappable_candidate_is_rejected_with_the_reason_not_a_compile_error():
    record = evaluate(DROPS_BIAS)
    assert (record.status, record.guard) == ("rejected", GUARD), record.error
    assert "the reference 2" in record.error
