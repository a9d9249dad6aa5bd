"""The keeper: the trusted process of a task on one GPU.  It makes the inputs, holds the truth, compares.

Started by `evaluator` as a fresh interpreter (``python -m vegtts.evaluate.cuda.keeper FD``), one
per task and GPU; it runs the task's reference and nothing else (never candidate code), so it
belongs to the parent's side of the trust boundary.  Ops (framed messages, `evaluate.protocol`):

- ``setup``: build the reference model from the parent's init seed and init inputs (weights on the
  CPU from the seed, as in every process, then moved to the GPU); make the correctness trials'
  inputs from their seeds *on the GPU* (``torch.manual_seed`` + ``get_inputs()`` under the GPU as
  default device) and their reference outputs.  Replies the weights (for the workers), the byte
  sizes of one input set and one output, and the GPU's uuid.
- ``new_slot`` / ``drop_slot``: one input and one output slot per worker (`slots`), exported by
  handle; dropped after the worker is gone.
- ``stage``: inputs of one call, from a seed the parent chose (trials: the public trial seeds;
  timed calls: seeds salted with a secret of the parent), written into one worker's input slot
  right before that worker's call; the reference output of that call is computed here and kept.
  So a worker sees an input only when it is about to be called on it.
- ``check``: the worker's output (copied into its output slot, described by its reply) against
  the kept reference output (`compare.compare_outputs`, on the GPU), and its input slot against
  the inputs as the reference left them (a candidate may not change its inputs where the
  reference does not).
"""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import sys
import traceback
from typing import Any

import numpy as np
import torch

from vegtts.evaluate.compare import Comparison, compare_outputs, same_values
from vegtts.evaluate.cuda import slots as slot_layout
from vegtts.evaluate.cuda.worker import gpu_uuid, precision_policy, run_process, serve, set_precision_policy
from vegtts.tasks.runtime import clone_tree

_MODULE = "vegtts_reference_task"


def _dtype(name: str) -> torch.dtype:
    from vegtts.evaluate.protocol import _DTYPES

    return _DTYPES[name]


class Call:
    """One staged call: the inputs as the reference left them and the reference output."""

    def __init__(self, inputs_after: list[Any], output: Any, in_specs: list[list[Any]], out_layout: tuple[Any, list[list[Any]]]):
        self.inputs_after, self.output, self.in_specs, self.out_layout = inputs_after, output, in_specs, out_layout


class Keeper:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        name = os.environ.get("VEGTTS_WORKER_DEVICE", "cuda")
        self.device = torch.device("cuda", 0) if name == "cuda" else torch.device(name)
        self.model: Any = None
        self.module: Any = None
        self.atol = self.rtol = 1e-4
        self.atol_scaled = False  # the task's opt-in to an absolute tolerance scaled by max|ref| (compare.py)
        self.trials: dict[int, tuple[list[Any], Call]] = {}
        self.slots: dict[int, tuple[slot_layout.Slot, slot_layout.Slot]] = {}
        self.current: dict[int, Call] = {}
        self.in_nbytes = self.out_nbytes = 0
        self.next_id = 1

    # ------------------------------------------------------------------ inputs and reference
    def make_inputs(self, seed: int) -> list[Any]:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # every generator: the CPU's and the GPU's
        with torch.device(self.device):
            inputs = list(self.module.get_inputs())
        return [x.to(self.device) if isinstance(x, torch.Tensor) else x for x in inputs]

    def reference_call(self, inputs: list[Any]) -> Call:
        skeleton, in_specs, in_bytes = slot_layout.layout_of(inputs)
        work = clone_tree(inputs)
        with torch.no_grad():
            output = self.model(*work)
        out_skeleton, out_specs, out_bytes = slot_layout.layout_of(output)
        self.in_nbytes, self.out_nbytes = max(self.in_nbytes, in_bytes), max(self.out_nbytes, out_bytes)
        return Call(work, output, in_specs, (out_skeleton, out_specs))

    # ------------------------------------------------------------------ ops
    def setup(self, msg: dict[str, Any]) -> dict[str, Any]:
        set_precision_policy(bool(msg["tf32"]))
        torch.set_num_threads(int(msg.get("threads") or 1))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.atol, self.rtol = float(msg["atol"]), float(msg["rtol"])
        self.atol_scaled = bool(msg.get("atol_scaled", False))
        path = os.path.join(os.getcwd(), f"{_MODULE}.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(msg["source"])
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[_MODULE] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        self.module = module
        init_seed = int(msg["init_seed"])
        random.seed(init_seed)
        np.random.seed(init_seed)
        torch.manual_seed(init_seed)
        model = module.Model(*list(msg["init_inputs"]))
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if isinstance(model, torch.nn.Module) else None
        self.model = model.to(self.device) if isinstance(model, torch.nn.Module) else model
        for seed in msg["trial_seeds"]:
            inputs = self.make_inputs(int(seed))
            self.trials[int(seed)] = (inputs, self.reference_call(inputs))
        self.sync()
        return {"ok": True, "state_dict": state, "in_nbytes": self.in_nbytes, "out_nbytes": self.out_nbytes,
                "gpu_uuid": gpu_uuid(self.device), "policy": precision_policy()}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def new_slot(self, msg: dict[str, Any]) -> dict[str, Any]:
        folder = os.getcwd() if self.device.type != "cuda" else None
        pair = (slot_layout.new_slot(self.in_nbytes, self.device, folder), slot_layout.new_slot(self.out_nbytes, self.device, folder))
        sid = self.next_id
        self.next_id += 1
        self.slots[sid] = pair
        return {"ok": True, "id": sid, "in": pair[0].handle, "out": pair[1].handle}

    def drop_slot(self, msg: dict[str, Any]) -> dict[str, Any]:
        pair = self.slots.pop(int(msg["id"]), None)
        self.current.pop(int(msg["id"]), None)
        if pair is not None:
            self.sync()
            for s in pair:
                s.free()
        return {"ok": True}

    def stage(self, msg: dict[str, Any]) -> dict[str, Any]:
        sid, seed = int(msg["id"]), int(msg["seed"])
        in_slot, out_slot = self.slots[sid]
        if msg.get("trial"):
            inputs, call = self.trials[seed]
        else:
            inputs = self.make_inputs(seed)
            call = self.reference_call(inputs)
        if self.in_nbytes > in_slot.tensor.numel() or self.out_nbytes > out_slot.tensor.numel():
            raise RuntimeError("the task's inputs or outputs vary in size between seeds; a slot cannot hold them")
        skeleton, specs, _ = slot_layout.layout_of(inputs)
        slot_layout.write(in_slot.tensor, specs, slot_layout.tensors_of(inputs))
        out_slot.tensor.fill_(0xFF)  # NaN in every float dtype: an output the worker never copied cannot pass
        self.current[sid] = call
        self.sync()
        return {"ok": True, "inputs": [skeleton, specs], "output": list(call.out_layout)}

    def check(self, msg: dict[str, Any]) -> dict[str, Any]:
        sid = int(msg["id"])
        call = self.current.pop(sid)
        in_slot, out_slot = self.slots[sid]
        where = str(msg.get("where", "output"))
        skeleton, leaves = msg["meta"]
        expected_specs = call.out_layout[1]

        def leaf(j: int) -> torch.Tensor:
            info = leaves[j]
            shape, dtype = [int(s) for s in info["shape"]], str(info["dtype"])
            if info.get("copied") and j < len(expected_specs):
                return slot_layout.view(out_slot.tensor, expected_specs[j])
            return torch.empty(shape, dtype=_dtype(dtype) if dtype in _dtypes() else torch.uint8, device="meta")

        produced = slot_layout.rebuild(skeleton, leaf)
        try:
            cmp = compare_outputs(call.output, produced, self.atol, self.rtol, where, atol_scaled=self.atol_scaled)
        except NotImplementedError:  # a meta placeholder reached a value comparison
            cmp = Comparison(False, float("inf"), float("inf"), f"{where}: the output was not delivered")
        if cmp.ok:
            seen = [slot_layout.view(in_slot.tensor, spec) for spec in call.in_specs]
            expected = slot_layout.tensors_of(call.inputs_after)
            if not same_values(expected, seen):
                cmp = Comparison(False, cmp.max_abs_err, cmp.max_rel_err, f"{where}: the call changed its inputs")
        return {"ok": True, "match": cmp.ok, "max_abs_err": cmp.max_abs_err, "max_rel_err": cmp.max_rel_err, "error": cmp.error}

    def serve(self) -> None:
        ops = {"setup": self.setup, "new_slot": self.new_slot, "drop_slot": self.drop_slot, "stage": self.stage,
               "check": self.check}
        serve(self.sock, ops, _reference_failure)


def _reference_failure(exc: BaseException) -> dict[str, Any]:
    """The reference (or the keeper) failed: reported to the parent, which fails the task."""
    return {"ok": False, "status": "reference_error", "error": f"{type(exc).__name__}: {exc}"[:4000],
            "traceback": "".join(traceback.format_tb(exc.__traceback__)[-4:])[-3000:]}


def _dtypes() -> set[str]:
    from vegtts.evaluate.protocol import _DTYPES

    return set(_DTYPES)


if __name__ == "__main__":
    run_process(sys.argv, Keeper)
