"""transformers: the model in this process (CPU or one GPU), our own decode loop on token ids
(vegtts.sampling.transformers_backend); it writes the task's parquet itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vegtts.sampling.backends.base import BACKENDS, SamplingBackend


def sample_task(
    tasks_json_path: str | Path, task_id: str, settings: dict[str, Any], model_path: str | Path, out_parquet: str | Path,
    policy: str = "base", adapter_path: str | Path | None = None,
) -> Path:
    from vegtts.sampling.transformers_backend import run_sampling

    return run_sampling(tasks_json_path, task_id, settings, model_path, out_parquet, policy, adapter_path)


BACKENDS.register(SamplingBackend("transformers", sample_task=sample_task, scores=True))
