"""The sampling stage of one task through any registered backend (vegtts.sampling.backends).

`sample_with_backend` hands a backend that samples on its own (transformers) the whole task; for
the others it builds the prompt, asks the backend's `generate` for K generations and turns them
into the same SampleRecord/parquet contract: the same extraction, and the backend and its
settings recorded in the metadata. `model_path` still names the local copy of the model: its
tokenizer maps token texts to ids, finds the code span in tokens and, later, lets the scorer
teacher-force the stored tokens.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from vegtts.io import provenance, write_parquet
from vegtts.records import to_row
from vegtts.sampling.backends import BACKENDS, GenerationRequest, SamplingBackend
from vegtts.sampling.conversion import adapter_name, to_raw_sample
from vegtts.sampling.prompts import build_prompt, prompt_sha
from vegtts.sampling.transformers_backend import SamplerSettings, _to_record, encode_prompt, load_task_specs

log = logging.getLogger(__name__)


def journal_path(out_parquet: Path) -> Path:
    return out_parquet.with_name(out_parquet.name + ".requests.jsonl")


def _load_tokenizer(model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)


def sample_with_backend(
    backend: str,
    tasks_json_path: str | Path,
    task_id: str,
    settings: dict[str, Any],
    backend_settings: dict[str, Any],
    model_path: str | Path,
    out_parquet: str | Path,
    policy: str = "base",
    adapter_path: str | Path | None = None,
    tokenizer: Any = None,
) -> Path:
    """Sample one task through the backend named `backend` and write its SampleRecords atomically."""
    chosen = BACKENDS[backend]
    if chosen.sample_task is not None:
        return chosen.sample_task(tasks_json_path=tasks_json_path, task_id=task_id, settings=settings, model_path=model_path,
                                  out_parquet=out_parquet, policy=policy, adapter_path=adapter_path)
    return _sample_generations(chosen, tasks_json_path, task_id, settings, backend_settings, model_path, Path(out_parquet),
                               policy, adapter_path, tokenizer)


def _sample_generations(
    backend: SamplingBackend,
    tasks_json_path: str | Path,
    task_id: str,
    settings: dict[str, Any],
    backend_settings: dict[str, Any],
    model_path: str | Path,
    out_parquet: Path,
    policy: str,
    adapter_path: str | Path | None,
    tokenizer: Any,
) -> Path:
    import pandas as pd
    from tqdm import tqdm

    s = SamplerSettings.from_dict(settings)
    specs = load_task_specs(tasks_json_path)
    if task_id not in specs:
        raise ValueError(f"task {task_id!r} not in {tasks_json_path} (has: {sorted(specs)})")
    spec = specs[task_id]
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(model_path)
    prompt = build_prompt(spec, s.prompt_format, s.prompt_style, s.n_shots, tokenizer, reference=s.prompt_reference)
    prompt_ids = [int(t) for t in encode_prompt(tokenizer, prompt)[0]]
    t0 = time.perf_counter()
    with tqdm(total=s.k, desc=f"sample {task_id} ({backend.name})", unit="sample") as bar:
        out = backend.generate(GenerationRequest(prompt, prompt_ids, spec.task_id, s, backend_settings, model_path,
                                                 adapter_path, journal_path(out_parquet), bar))
    sent_prompt = out.sent_prompt if out.sent_prompt is not None else prompt
    seconds = time.perf_counter() - t0
    n_prompt = len(prompt_ids)
    stops = s.stops()
    model_id = f"{backend.name}:{out.metadata['model']}" + (f"+{adapter_name(adapter_path)}" if adapter_path else "")
    records = [
        _to_record(to_raw_sample(g, stops, tokenizer, s.max_new_tokens), i, spec, s, s.seed, policy, prompt_sha(sent_prompt),
                   n_prompt, model_id, tokenizer)
        for i, g in enumerate(out.generations)
    ]
    df = pd.DataFrame([to_row(r) for r in records])
    meta = {
        "task_id": task_id,
        "policy": policy,
        "settings": s.to_dict(),
        "backend": out.metadata,
        "prompt_sha": prompt_sha(sent_prompt),
        "prompt": sent_prompt,
        "model_id": model_id,
        "model_path": str(model_path),
        "adapter_path": str(adapter_path) if adapter_path else None,
        "sampling_seconds": seconds,
        "n_new_tokens": int(df["n_tokens"].sum()) if len(df) else 0,
        "provenance": provenance(),
    }
    write_parquet(out_parquet, df, metadata=meta)
    journal_path(out_parquet).unlink(missing_ok=True)
    log.info("%s: %d samples, %d tokens in %.1f s via %s -> %s", task_id, len(df), meta["n_new_tokens"], seconds, backend.name,
             out_parquet)
    return out_parquet
