"""Executing a reference: module from source, seeded inputs, seeded model.

The evaluator builds on these, so they do nothing beyond what they say: the only side effect
is seeding torch's global RNG (and registering the source with `linecache` so tracebacks
show the reference's lines).
"""

from __future__ import annotations

import copy
import linecache
import types
from collections.abc import Callable
from typing import Any

from vegtts.records import TaskSpec


def load_module_from_source(source: str, module_name: str, filename: str) -> types.ModuleType:
    """Exec `source` into a fresh module object; it is not added to sys.modules."""
    module = types.ModuleType(module_name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)
    return module


def load_reference_module(spec: TaskSpec, module_name: str = "vegtts_reference") -> types.ModuleType:
    """The reference problem of `spec` as a fresh module (Model, get_inputs, get_init_inputs)."""
    return load_module_from_source(spec.source, module_name, f"<vegtts-task {spec.task_id}>")


def seed_torch(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def make_inputs(module: types.ModuleType, seed: int) -> list[Any]:
    """Seed torch's RNG with `seed`, then return `module.get_inputs()` as a list."""
    seed_torch(seed)
    return list(module.get_inputs())


VARIED_PEAK = 4.0  # floating inputs of the varied trial reach at least this magnitude


def vary_inputs(inputs: list[Any], seed: int, signed: bool = True) -> list[Any]:
    """`inputs` with every floating tensor scaled up to a peak |value| of at least VARIED_PEAK and,
    with `signed`, each element's sign flipped at random (seeded by `seed`).

    KernelBench's inputs are `torch.rand` in [0, 1): on them ReLU, LeakyReLU, ELU, HardTanh and
    HardSigmoid's clamps are never exercised, so `return x` passes a ReLU.  Integer, bool and
    non-tensor inputs are left as they are; a tensor's scale-up factor is never below 1.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)

    def vary(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel() > 0:
            peak = float(torch.nan_to_num(x.detach(), nan=0.0, posinf=0.0, neginf=0.0).abs().max())
            y = x * max(1.0, VARIED_PEAK / peak) if peak > 0 else x.clone()
            if signed:
                flips = torch.randint(0, 2, x.shape, generator=generator).to(x.dtype).mul_(2).sub_(1)
                y = y * flips
            return y
        if isinstance(x, (list, tuple)):
            return type(x)(vary(item) for item in x)
        return x

    return [vary(x) for x in inputs]


def _all_finite(obj: Any) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return not (obj.is_floating_point() or obj.is_complex()) or bool(torch.isfinite(obj).all())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(x) for x in obj)
    if isinstance(obj, float):
        return obj == obj and abs(obj) != float("inf")
    return True


def varied_trial_inputs(
    module: types.ModuleType, model: Any, seed: int, make: Callable[[types.ModuleType, int], list[Any]] = make_inputs
) -> tuple[list[Any], str] | None:
    """Inputs of the extra correctness trial and their kind ("signed" or "wider"), or None.

    get_inputs() at `seed`, varied by `vary_inputs`: signed first; where the reference's output
    on those is not finite (log of a probability, cumprod overflow) or the reference raises, the
    unsigned scale-up; where that fails too, no extra trial.  The reference runs on a copy of
    `model`, so the model's own state (e.g. batch-norm statistics) is not advanced.
    """
    import torch

    for kind, signed in (("signed", True), ("wider", False)):
        inputs = vary_inputs(make(module, seed), seed + 1, signed)
        try:
            with torch.no_grad():
                output = copy.deepcopy(model)(*copy.deepcopy(inputs))
        except Exception:  # noqa: BLE001 - the reference's own domain check; the plain trials still run
            continue
        if _all_finite(output):
            return inputs, kind
    return None


def make_init_inputs(module: types.ModuleType, init_seed: int) -> list[Any]:
    seed_torch(init_seed)
    return list(module.get_init_inputs())


def make_model(module: types.ModuleType, init_seed: int, class_name: str = "Model") -> Any:
    """Seed torch's RNG, then construct `class_name(*get_init_inputs())` in eval mode.

    The seed is set once, before get_init_inputs, so init inputs and parameters are both
    reproducible.  Pass class_name="ModelNew" to build a candidate the same way.
    """
    init_inputs = make_init_inputs(module, init_seed)
    cls = getattr(module, class_name)
    return cls(*init_inputs).eval()


def solution_program(spec: TaskSpec, solution_source: str) -> str:
    """A full-module solution appended to the reference, so it can use (and subclass) `Model`.

    This is the convention of the hand-written solutions in tests/solutions/: they define
    `class ModelNew(Model)` (or any nn.Module with Model's constructor signature and
    parameter names, so the reference state_dict loads into it).
    """
    return spec.source.rstrip("\n") + "\n\n\n# ---- solution ----\n" + solution_source


# ----------------------------------------------------------------------------- as the evaluator runs it


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global RNGs (get_inputs may draw from any of them), as the
    evaluator seeds them before every get_inputs / get_init_inputs call."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    seed_torch(seed)


def clone_tree(obj: Any) -> Any:
    """A copy of inputs or outputs: tensors cloned, lists and tuples rebuilt, other leaves deep-copied."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_tree(x) for x in obj)
    return copy.deepcopy(obj)


def fresh_inputs(module: types.ModuleType, seed: int) -> list[Any]:
    """`get_inputs()` with every global RNG seeded by `seed` (the evaluator's inputs of one call)."""
    seed_everything(seed)
    return list(module.get_inputs())


def build_reference(module: types.ModuleType, init_seed: int) -> tuple[Any, list[Any]]:
    """(model, init_inputs) exactly as the evaluator builds the reference: seeded init inputs,
    reseeded, then `Model(*init_inputs)` left as constructed, i.e. in train mode (KernelBench runs
    it that way too: batch norm uses batch statistics, dropout is active)."""
    seed_everything(init_seed)
    init_inputs = list(module.get_init_inputs())
    seed_everything(init_seed)
    return module.Model(*init_inputs), init_inputs
