"""The sampling stage for the backends that do not run the model through transformers here.

`run_remote_sampling` is the counterpart of transformers_backend.run_sampling for the `openai`
(HTTP) and `vllm` (in-process) backends: the same prompt, the same extraction and the same
SampleRecord/parquet contract, with the backend and its settings recorded in the metadata.
`model_path` still names the local copy of the model: its tokenizer maps token texts to ids,
finds the code span in tokens and, later, lets the scorer teacher-force the stored tokens.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from vegtts.io import provenance, write_parquet
from vegtts.records import to_row
from vegtts.sampling.conversion import Generation, adapter_name, to_raw_sample
from vegtts.sampling.prompts import build_prompt, chat_user_turn, prompt_sha
from vegtts.sampling.transformers_backend import SamplerSettings, _to_record, encode_prompt, load_task_specs

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "openai", "vllm")


def journal_path(out_parquet: Path) -> Path:
    return out_parquet.with_name(out_parquet.name + ".requests.jsonl")


def _load_tokenizer(model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)


def run_remote_sampling(
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
    """Sample one task through `backend` ("openai" or "vllm") and write its SampleRecords atomically."""
    import pandas as pd
    from tqdm import tqdm

    if backend not in ("openai", "vllm"):
        raise ValueError(f"config key 'sampling.backend': {backend!r} is not a remote backend (openai, vllm)")
    out_parquet = Path(out_parquet)
    s = SamplerSettings.from_dict(settings)
    specs = load_task_specs(tasks_json_path)
    if task_id not in specs:
        raise ValueError(f"task {task_id!r} not in {tasks_json_path} (has: {sorted(specs)})")
    spec = specs[task_id]
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(model_path)
    prompt = build_prompt(spec, s.prompt_format, s.prompt_style, s.n_shots, tokenizer, reference=s.prompt_reference)
    prompt_ids = [int(t) for t in encode_prompt(tokenizer, prompt)[0]]
    t0 = time.perf_counter()
    with tqdm(total=s.k, desc=f"sample {task_id} ({backend})", unit="sample") as bar:
        if backend == "openai":
            gens, backend_meta, sent_prompt = _sample_openai(prompt, spec.task_id, s, backend_settings, out_parquet, bar, adapter_path)
        else:
            from vegtts.sampling.vllm_backend import sample_vllm

            gens, backend_meta = sample_vllm(prompt, spec.task_id, s, backend_settings, model_path, adapter_path, bar,
                                             prompt_ids=prompt_ids)
            sent_prompt = prompt
    seconds = time.perf_counter() - t0
    n_prompt = len(prompt_ids)
    stops = s.stops()
    model_id = f"{backend}:{backend_meta['model']}" + (f"+{adapter_name(adapter_path)}" if adapter_path else "")
    records = [
        _to_record(to_raw_sample(g, stops, tokenizer, s.max_new_tokens), i, spec, s, s.seed, policy, prompt_sha(sent_prompt),
                   n_prompt, model_id, tokenizer)
        for i, g in enumerate(gens)
    ]
    df = pd.DataFrame([to_row(r) for r in records])
    meta = {
        "task_id": task_id,
        "policy": policy,
        "settings": s.to_dict(),
        "backend": backend_meta,
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
    log.info("%s: %d samples, %d tokens in %.1f s via %s -> %s", task_id, len(df), meta["n_new_tokens"], seconds, backend, out_parquet)
    return out_parquet


def _sample_openai(
    prompt: str, task_id: str, s: SamplerSettings, backend_settings: dict[str, Any], out: Path, bar: Any,
    adapter_path: str | Path | None = None,
) -> tuple[list[Generation], dict[str, Any], str]:
    from vegtts.sampling.openai_backend import OpenAISettings, public_url, sample_remote

    o = OpenAISettings.from_dict(backend_settings)
    if o.api == "chat":  # the server applies its chat template to a user turn made from the plain prompt
        if s.prompt_style != "completion":
            raise ValueError("sampling.openai.api: chat needs prompt.style: completion (the server applies its own chat template)")
        text = chat_user_turn(prompt)
        sent = json.dumps({"messages": [{"role": "user", "content": text}]})
    else:
        text = sent = prompt
    gens, server = sample_remote(text, task_id, s, o, journal_path(out), bar, adapter_path)
    meta = {
        "name": "openai",
        "base_url": public_url(o.base_url),
        "api": o.api,
        "model": o.model,
        "n_per_request": o.n_per_request,
        "server_model": server.get("model"),
        "system_fingerprint": server.get("system_fingerprint"),
        "n_requests": server.get("n_requests"),
        "adapter": server.get("adapter"),
    }
    return gens, meta, sent
