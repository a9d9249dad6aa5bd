"""The trusted side of a CPU evaluation: the task's reference, run once in the parent.

`ReferenceContext.build` runs the reference (never a candidate) on the correctness trials' inputs
(public seeds) and keeps their outputs and aliasing facts; the timing inputs come from a secret of
this process (`RUN_SECRET`), fresh per call, pooled in sealed shared memory where they fit
(`input_pool`).  One context serves every candidate of a task.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import vegtts.tasks.runtime as task_runtime
from vegtts.evaluate.child import aliasing
from vegtts.evaluate.compare import same_values
from vegtts.evaluate.input_pool import InputPool
from vegtts.evaluate.protocol import Encoded
from vegtts.evaluate.session import ChildSession, Measured, encode_request
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.stats import TimingStats
from vegtts.evaluate.task import derive_seed
from vegtts.records import TaskSpec

log = logging.getLogger(__name__)

_PAYLOAD_CACHE_BYTES = 512 << 20  # keep encoded timing batches of a task in memory up to this size
POOL_MAX_BYTES = 1 << 30  # timing inputs of a task (both sides) in shared memory up to this size
RUN_SECRET = secrets.token_hex(16)  # timing inputs and checked positions: unknown to any child


class ReferenceFailure(RuntimeError, ValueError):
    """The task's reference itself fails: no candidate can be judged (a ValueError: the CLI reports
    it as one clear line about the task, not a traceback)."""


def _seed_python_rngs(seed: int) -> None:
    """Python's and numpy's RNGs too (tasks.runtime seeds torch's), for get_inputs that use them."""
    random.seed(seed)
    np.random.seed(seed)


def load_reference(spec: TaskSpec) -> types.ModuleType:
    """The trusted reference source (never a candidate) as a fresh module, via the task loader."""
    module = task_runtime.load_reference_module(spec)
    for name in ("Model", "get_inputs", "get_init_inputs"):
        if not hasattr(module, name):
            raise ReferenceFailure(f"task {spec.task_id}: the task source defines no {name}")
    return module


def make_inputs(module: types.ModuleType, seed: int) -> list[Any]:
    _seed_python_rngs(seed)
    return task_runtime.make_inputs(module, seed)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)



@dataclass
class Trial:
    inputs: list[Any]  # pristine copy kept by the parent
    output: Any  # reference output
    flags: dict[str, bool]  # reference aliasing facts
    payload: Encoded  # the forward request
    ack_payload: Encoded  # the same request for the pair's reference child (replies just ok)
    varied: bool = False  # the varied trial: its absolute tolerance scales with its output (compare.py)


@dataclass
class ReferenceContext:
    """Everything trusted about one task: computed once in the parent, shared by all candidates."""

    spec: TaskSpec
    settings: EvalSettings
    module: types.ModuleType
    init_inputs: list[Any]
    init_seed: int
    state: dict[str, torch.Tensor]
    trials: list[Trial]
    _timing_payloads: dict[int, Encoded] = field(default_factory=dict)
    _payload_bytes: int = 0
    pool: InputPool | None = None
    control: TimingStats | None = None  # the task's A/A control (the reference timed against itself)
    control_flags: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _control_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self._lock:
            if self.pool is not None:
                self.pool.close()
                self.pool = None

    @classmethod
    def build(cls, spec: TaskSpec, settings: EvalSettings) -> ReferenceContext:
        module = load_reference(spec)
        init_seed = derive_seed(settings.seed, "init")
        _seed_python_rngs(init_seed)
        init_inputs = task_runtime.make_init_inputs(module, init_seed)
        with _torch_threads(settings.threads), torch.no_grad():
            # not task_runtime.make_model: that one switches to eval mode, while the children (and
            # KernelBench) run the module as constructed (train mode, e.g. batch-norm statistics)
            _seed_python_rngs(init_seed)
            torch.manual_seed(init_seed)
            model = module.Model(*init_inputs)
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            trials, previous = [], []
            kept: list[Any] = []  # alive until all trials ran, as in the child: no address is reused
            mutates = False
            varied = None  # the extra trial on signed, wider inputs (docs/evaluator.md, "Correctness")
            if settings.varied_inputs and spec.varied_inputs:
                varied = task_runtime.varied_trial_inputs(module, model, derive_seed(settings.seed, "correctness", "varied"), make_inputs)
            for t in range(settings.correctness_trials + (varied is not None)):
                inputs = make_inputs(module, derive_seed(settings.seed, "correctness", t)) if t < settings.correctness_trials else varied[0]
                working = task_runtime.clone_tree(inputs)
                try:
                    output = model(*working)
                except Exception as exc:
                    raise ReferenceFailure(f"task {spec.task_id}: the reference forward fails: {exc}") from exc
                mutates = mutates or not same_values(working, inputs)
                flags = aliasing(working, output, previous)
                previous.extend(t_.untyped_storage().data_ptr() for t_ in flat_tensors(output))
                kept.append(output)
                output = task_runtime.clone_tree(output)
                payload = encode_request({"op": "forward", "inputs": inputs})
                ack = encode_request({"op": "forward", "inputs": inputs, "reply": "ack"})
                trials.append(Trial(inputs, output, flags, payload, ack, varied=t >= settings.correctness_trials))
        ctx = cls(spec, settings, module, init_inputs, init_seed, state, trials)
        if not mutates:  # pooled inputs are read-only pages; a mutating reference gets socket copies
            ctx.pool = ctx._build_pool()
        return ctx

    def timing_batch(self, round_idx: int) -> list[list[Any]]:
        """Inputs of one timed batch (round -1 = warm-up): fresh per call, from a secret of this
        process, so no child can know or precompute them (correctness trials keep public seeds)."""
        n = self.settings.warmup_calls if round_idx < 0 else self.settings.calls_per_round
        return [make_inputs(self.module, derive_seed(self.settings.seed, "timing", RUN_SECRET, round_idx, c)) for c in range(n)]

    def _build_pool(self) -> InputPool | None:
        """Planned rounds (and the warm-up) in shared memory, if they fit POOL_MAX_BYTES; rounds
        added later join the pool while it still fits, else they travel through the socket."""
        rounds = ([-1] if self.settings.warmup_calls > 0 else []) + list(range(self.settings.timing_rounds))
        first = self.timing_batch(rounds[0])
        per_call = sum(t.numel() * t.element_size() for call in first for t in flat_tensors(call)) / max(1, len(first))
        calls = self.settings.warmup_calls + self.settings.timing_rounds * self.settings.calls_per_round
        if 2 * per_call * calls > POOL_MAX_BYTES:
            log.info("task %s: timing inputs too large for the shared pool; sending them per round", self.spec.task_id)
            return None
        try:
            return InputPool.build({r: (first if r == rounds[0] else self.timing_batch(r)) for r in rounds})
        except (TypeError, OSError, AttributeError) as exc:
            log.info("task %s: timing inputs not pooled (%s); sending them per round", self.spec.task_id, exc)
            return None

    def load(self, child: ChildSession, copy: int, round_idx: int) -> Measured:
        """Give `child` copy `copy` (0 or 1) of a timed round's inputs (-1 = warm-up), releasing its last batch."""
        pool = self.pool
        if pool is not None:
            with self._lock:
                if round_idx not in pool.layout and 2 * pool.round_bytes * (len(pool.layout) + 1) <= POOL_MAX_BYTES:
                    pool.add_round(round_idx, self.timing_batch(round_idx))  # an added round (wide interval)
            if round_idx in pool.layout:
                return child.measured_request(pool.load_request(round_idx), pool.fd_sender(copy, round_idx))
        return child.measured_request(self.batch_request(round_idx))

    def extra_mb(self) -> int:
        """Address space a timing child needs for mapped inputs (two rounds at a time)."""
        return 0 if self.pool is None else 2 * (self.pool.round_bytes >> 20) + 2

    def setup_request(self, role: str, source: str) -> Encoded:
        return encode_request(
            {
                "op": "setup",
                "role": role,
                "source": source,
                "init_inputs": self.init_inputs,
                "init_seed": self.init_seed,
                "state": self.state,
                "threads": self.settings.threads,
                # the child traps Model.forward between the reference part and the candidate's code
                "trap_reference": "" if role == "ref" or self.settings.allow_reference_calls else self.spec.source,
            }
        )

    def batch_request(self, round_idx: int) -> Encoded:
        """Inputs of one timed batch sent through the socket (tasks whose inputs are not pooled)."""
        if round_idx in self._timing_payloads:
            return self._timing_payloads[round_idx]
        payload = encode_request({"op": "load", "batch": self.timing_batch(round_idx)})
        if self._payload_bytes + payload.nbytes <= _PAYLOAD_CACHE_BYTES:
            self._timing_payloads[round_idx] = payload
            self._payload_bytes += payload.nbytes
        return payload


def flat_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in flat_tensors(x)]
    return []

