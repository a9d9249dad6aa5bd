"""Data contracts shared by the stages: task specs, sample and evaluation records.

Parquet columns are the dataclass fields; `to_row`/`from_row` convert.  Keep field names
stable: stored artifacts outlive code versions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Every evaluation ends in exactly one of these.
STATUSES = (
    "ok",  # correct (speed is a separate question)
    "no_code",  # extraction found nothing to run
    "syntax_error",  # the assembled program does not parse
    "compile_error",  # import/exec of the module or ModelNew construction failed
    "runtime_error",  # forward raised
    "timeout",  # wall-clock or CPU limit hit
    "crash",  # child died (signal, os._exit, segfault)
    "oom",  # memory limit hit
    "incorrect",  # ran, but output type/shape/dtype/values differ or inputs were mutated
    "rejected",  # a guard fired (reason in `guard`)
)

# Sampling finish reasons.
FINISH_REASONS = ("stop", "length")

# Extraction outcomes.
EXTRACT_STATUSES = ("ok", "no_code", "truncated")


@dataclass(frozen=True)
class TaskSpec:
    """A resolved problem in the KernelBench convention (`Model`, `get_inputs`, `get_init_inputs`)."""

    task_id: str  # stable id used in paths, e.g. "relu_where"
    name: str  # human-readable name
    suite: str  # builtin | kernelbench | dir
    source: str  # full reference module source
    source_sha256: str
    forward_args: list[str]  # argument names of Model.forward (without self)
    description: str = ""
    atol: float = 1e-4  # fp32/fp64 tolerances (raised to 1e-2 for fp16/bf16 outputs; evaluate/compare.py)
    rtol: float = 1e-4
    tags: list[str] = field(default_factory=list)  # e.g. ["single-op"], ["multi-op", "headroom"]
    atol_scaled: bool = False  # absolute tolerance x max(1, max|ref|): a task's opt-in (ATOL_SCALED)
    tolerance_reason: str = ""  # why the task sets its own tolerance (TOLERANCE_REASON)
    varied_inputs: bool = True  # the extra correctness trial on signed, wider inputs (VARIED_INPUTS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SampleRecord:
    """One completion of one prompt, with the raw log-probs of its sampled tokens."""

    task_id: str
    policy: str  # "base" or a TTT checkpoint name such as "ttt-seed0-step2"
    seed: int  # sampling seed of the batch this sample came from
    sample_idx: int  # 0..K-1 within (task, policy, seed)
    prompt_sha: str
    prompt_format: str  # body | module
    completion: str  # decoded completion text (after stop-sequence truncation)
    token_ids: list[int]
    token_logprobs: list[float]  # log p(token) under the raw (unscaled) logits
    code_token_start: int  # [start, end) token span of the extracted code in token_ids
    code_token_end: int
    n_tokens: int
    n_prompt_tokens: int
    finish_reason: str  # stop | length
    extract_status: str  # ok | no_code | truncated
    code: str  # extracted code (a forward body or a module)
    program: str  # the full candidate module handed to the evaluator ("" if no code)
    code_sha256: str  # sha256 of `program` ("" if no code)
    model_id: str
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass
class EvalRecord:
    """The evaluator's verdict on one candidate program for one task."""

    task_id: str
    code_sha256: str
    status: str  # one of STATUSES
    correct: bool
    error: str = ""  # short summary (first/last lines of a traceback, or the mismatch)
    guard: str = ""  # the guard that fired, for status == "rejected" (or a warning flag)
    max_abs_err: float = float("nan")
    max_rel_err: float = float("nan")
    ref_time_ms: float = float("nan")  # median per-call time of the reference
    cand_time_ms: float = float("nan")  # median per-call time of the candidate
    ref_time_spread: float = float("nan")  # IQR / median of the reference's rounds
    cand_time_spread: float = float("nan")
    speedup: float = 0.0  # ref/cand medians; 0 unless correct
    speedup_lo: float = 0.0  # bootstrap 95% interval of the speedup
    speedup_hi: float = 0.0
    n_timing_rounds: int = 0
    flags: str = ""  # comma-separated warnings, e.g. "excessive_speedup_retimed"
    hardware: str = ""  # fingerprint of the machine that timed it
    eval_seconds: float = 0.0  # wall time spent on this candidate
    cached: bool = False  # served from the per-candidate cache


def to_row(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_row(cls: type, row: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: row[k] for k in names if k in row})
