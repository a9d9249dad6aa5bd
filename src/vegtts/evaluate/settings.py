"""Evaluator settings: what a candidate's verdict depends on."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from vegtts.config import schema_default
from vegtts.io import code_fingerprint, short_hash

# Settings that change how fast the evaluation runs but never its verdict or its numbers.
_NOT_IN_CACHE_KEY = ("max_parallel",)
# device "cuda" only (evaluate/cuda/); left out of a CPU verdict's key so CPU caches stay valid
_CUDA_ONLY = ("tf32", "gpus", "build_cache_dir", "build_timeout_s", "l2_flush_mb", "gpu_hold", "min_interval_rel")
_CUDA_NOT_IN_CACHE_KEY = ("gpus", "build_cache_dir", "build_timeout_s")
_CPU_ONLY = ("timing_resolution",)  # left out of a CUDA verdict's key so CUDA caches stay valid
DEVICES = ("cpu", "cuda")


def _default(key: str) -> Any:
    """The config schema's default of evaluation.<key>: defaults are written down only there."""
    return schema_default(f"evaluation.{key}")


@dataclass
class EvalSettings:
    device: str = _default("device")
    threads: int = _default("threads")  # torch intra-op threads in every child (timing and correctness)
    correctness_trials: int = _default("correctness_trials")  # fresh-input trials that must all match (KernelBench's scripts: 5)
    varied_inputs: bool = _default("varied_inputs")  # plus one trial on signed, wider inputs (tasks.runtime.vary_inputs), where the task allows
    timing_rounds: int = _default("timing_rounds")  # interleaved reference/candidate rounds
    calls_per_round: int = _default("calls_per_round")  # forward calls per batch; per-call time = batch time / calls
    warmup_calls: int = _default("warmup_calls")  # untimed calls per side before the rounds
    timeout_s: float = _default("timeout_s")  # wall-clock limit per child session (correctness, then timing)
    memory_limit_mb: int = _default("memory_limit_mb")  # address space a child may add on top of the warm server
    bootstrap: int = _default("bootstrap")  # (cuda) resamples for the speedup's bootstrap interval
    # (cpu) timing noise between two fresh processes running the same code (log units): widens the
    # speedup interval in quadrature (docs/evaluator.md, "Noise"); 0 = the rounds' interval alone
    timing_resolution: float = _default("timing_resolution")
    excessive_speedup: float = _default("excessive_speedup")  # speedups above this are re-timed in fresh children and flagged
    seed: int = 0  # root of every input/init seed
    allow_reference_calls: bool = _default("allow_reference_calls")  # False: ModelNew may not call Model's forward
    max_parallel: int = field(default_factory=lambda: os.cpu_count() or 1)  # correctness workers
    # device "cuda" (evaluate/cuda/): TF32 policy set explicitly and equally for reference and
    # candidate; how many visible GPUs to use (0 = all, one worker thread each); where compiled
    # candidates are cached by source hash ("" = <cache dir>/cuda_builds); a build's own time
    # limit; L2 flush buffer between timed calls (0 = twice the GPU's L2); whether the blocking
    # kernel holds the GPU while a timed call is enqueued (False: time from a device sync, with the
    # launch latency in it); the least half-width of the speedup interval, relative
    tf32: bool = _default("tf32")
    gpus: int = _default("gpus")
    build_cache_dir: str = _default("build_cache_dir")
    build_timeout_s: float = _default("build_timeout_s")
    l2_flush_mb: int = _default("l2_flush_mb")
    gpu_hold: bool = _default("gpu_hold")
    min_interval_rel: float = _default("min_interval_rel")  # two processes timing one program on one GPU differ by up to ~1% (docs/evaluator.md)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"evaluator device {self.device!r} is not supported; allowed: {list(DEVICES)}")
        if self.gpus < 0 or self.l2_flush_mb < 0 or self.build_timeout_s <= 0:
            raise ValueError("evaluator settings gpus and l2_flush_mb must be >= 0 and build_timeout_s > 0")
        if not 0 <= float(self.min_interval_rel) < 1:
            raise ValueError(f"evaluator setting min_interval_rel must be in [0, 1), got {self.min_interval_rel!r}")
        for name in ("threads", "correctness_trials", "timing_rounds", "calls_per_round", "max_parallel"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"evaluator setting {name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup_calls < 0 or self.bootstrap < 0:
            raise ValueError("warmup_calls and bootstrap must be >= 0")
        if not 0 <= float(self.timing_resolution) <= 1:
            raise ValueError(f"evaluator setting timing_resolution must be between 0 and 1 (log units), got {self.timing_resolution!r}")
        if self.timeout_s <= 0 or self.memory_limit_mb <= 0 or self.excessive_speedup <= 1:
            raise ValueError("timeout_s, memory_limit_mb must be > 0 and excessive_speedup > 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EvalSettings:
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown evaluator setting(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cache_key(self) -> dict[str, Any]:
        """Everything a cached verdict depends on: result-relevant settings and the evaluator code."""
        dropped = _NOT_IN_CACHE_KEY + (_CUDA_ONLY if self.device == "cpu" else _CUDA_NOT_IN_CACHE_KEY + _CPU_ONLY)
        key = {k: v for k, v in self.to_dict().items() if k not in dropped}
        key["evaluator_code"] = code_fingerprint("evaluate")
        return key

    def settings_hash(self) -> str:
        return short_hash(self.cache_key())
