"""The CUDA device of the evaluator: CUDA C++ (load_inline) and Triton candidates on NVIDIA GPUs.

Kept apart from the CPU evaluator (`evaluate.runner`, `server`, `child`); both run the sequence of
`evaluate.task`, and `evaluate.devices` picks this one when `evaluation.device` is "cuda":

- `build_cache`: a compiled-extension / Triton cache per candidate source hash, so a second
  evaluation of the same source does not recompile.
- `worker`: the sandboxed GPU process (one per candidate, one reference worker per task and GPU):
  compiles, runs correctness calls, times calls with CUDA events and full device sync.
- `keeper`: the trusted GPU process of a task: inputs, reference outputs, comparison on the GPU.
- `processes`: starting and talking to those processes; `gpu_session`: the keeper and reference
  timer kept per task and GPU, and the started workers waiting per GPU.
- `evaluator`: the trusted parent side (`CudaDevice`): checks, timing statistics and verdicts, one
  thread per GPU so timing never shares a GPU.

Nothing here imports torch.cuda in the parent: CUDA is initialised only inside workers, which
are fresh interpreters, never forks of a process that has touched CUDA.
"""

from vegtts.evaluate.cuda.build_cache import build_dir_for, source_key

__all__ = ["build_dir_for", "source_key"]
