"""What a sampling backend is: a name, the settings that change its samples, a settings check and
the function that samples.

Most backends implement `generate`: K generations of one prompt (text, token texts or ids, the
raw log-prob of every sampled token); the sampling stage (vegtts.sampling.stage) builds the prompt,
turns the generations into SampleRecords and writes the parquet, the same for every backend. A
backend that needs the whole stage for itself (transformers: its own decode loop on token ids)
gives `sample_task` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vegtts.registry import Registry

if TYPE_CHECKING:
    from vegtts.sampling.conversion import Generation
    from vegtts.sampling.transformers_backend import SamplerSettings


@dataclass(frozen=True)
class GenerationRequest:
    """One task's request to a backend: K (settings.k) generations of one prompt."""

    prompt: str  # the task's prompt text (vegtts.sampling.prompts.build_prompt)
    prompt_ids: Sequence[int]  # the same prompt as token ids (encode_prompt), for engines that take ids
    task_id: str
    settings: SamplerSettings
    backend_settings: dict[str, Any]  # the sampling.<backend> block, identity and runtime keys
    model_path: str | Path  # the local copy of the model (its tokenizer maps texts to ids)
    adapter_path: str | Path | None  # a TTT checkpoint (LoRA folder) to sample from, or None
    journal: Path  # where finished requests may be kept for a rerun; removed once the parquet is written
    progress: Any  # a tqdm bar: update(n) after n generations


@dataclass(frozen=True)
class Generated:
    generations: list[Generation]  # K, in sample order
    metadata: dict[str, Any]  # the parquet's "backend" metadata; "model" names the model that answered
    sent_prompt: str | None = None  # the prompt as sent when it differs from request.prompt (a chat turn)


@dataclass(frozen=True)
class SamplingBackend:
    name: str  # the value of sampling.backend; its settings block is sampling.<name>
    generate: Callable[[GenerationRequest], Generated] | None = None
    sample_task: Callable[..., Path] | None = None  # instead of generate: vegtts.sampling.stage.sample_with_backend's arguments
    identity_keys: tuple[str, ...] = ()  # keys of sampling.<name> that change which samples come out (enter the sample key)
    check_settings: Callable[[dict[str, Any]], None] | None = None  # the sampling block at planning: raise ValueError naming the key
    scores: bool = False  # can teacher-force stored samples (`vegtts ttt score --backend`, vegtts.scoring.run_scoring)

    def __post_init__(self) -> None:
        if (self.generate is None) == (self.sample_task is None):
            raise ValueError(f"sampling backend {self.name!r}: give exactly one of generate and sample_task")


BACKENDS: Registry[SamplingBackend] = Registry("sampling backend", "sampling.backend")
