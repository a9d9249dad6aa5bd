"""Sampling with Hugging Face transformers on CPU (or one GPU): K completions per task.

Our own decode loop with a KV cache instead of `generate()`:
- the prompt is the same for all K rows, so it is prefilled once (batch 1) and the cache is
  repeated across rows (no padding, K-times less prefill compute);
- a row stops as soon as its decoded text contains a stop string (or EOS) and, with
  ``drop_finished``, is removed from the batch, so short answers do not pay for long ones;
- the log-prob of each sampled token is taken from the raw logits (log_softmax before
  temperature / top-p), which the scorer reproduces by a teacher-forced forward pass.
Sampling itself uses transformers' own temperature and top-p warpers and `torch.multinomial`,
so with ``drop_finished=False`` and no stop strings the tokens equal `generate()`'s for the same
seed (tested; equality can break only where batch-1 and batch-K prefill round differently).

Seeds: each batch seeds torch with a stable hash of (seed, task_id, batch index), so the same
config gives the same samples, independent of which tasks ran before in the process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vegtts.config import dataclass_from_settings, schema_default
from vegtts.extract import assemble_program, code_token_span, extract
from vegtts.io import provenance, sha256_text, write_parquet
from vegtts.records import SampleRecord, TaskSpec, to_row
from vegtts.sampling.prompts import build_prompt, prompt_sha, stop_sequences

log = logging.getLogger(__name__)


@dataclass
class SamplerSettings:
    k: int = schema_default("sampling.k")
    temperature: float = schema_default("sampling.temperature")
    top_p: float = schema_default("sampling.top_p")
    max_new_tokens: int = schema_default("sampling.max_new_tokens")
    batch_size: int = schema_default("sampling.batch_size")
    stop: list[str] | None = None  # None: the prompt format's stop sequences
    seed: int = schema_default("seed")
    prompt_format: str = schema_default("prompt.format")
    prompt_style: str = schema_default("prompt.style")
    n_shots: int = schema_default("prompt.n_shots")
    prompt_reference: str = "code"  # code: reference without docstring/suite metadata | full
    drop_finished: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerSettings:
        s = dataclass_from_settings(cls, d, "sampling")
        if s.k < 1 or s.batch_size < 1 or s.max_new_tokens < 1:
            raise ValueError("sampling k, batch_size and max_new_tokens must be >= 1")
        if s.temperature < 0 or not 0 < s.top_p <= 1:
            raise ValueError("sampling temperature must be >= 0 and top_p in (0, 1]")
        return s

    def stops(self) -> list[str]:
        return list(self.stop) if self.stop is not None else stop_sequences(self.prompt_format)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["stop"] = self.stops()
        return d


@dataclass
class RawSample:
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    done: bool = False


def batch_seed(seed: int, task_id: str, batch_index: int) -> int:
    """A stable 63-bit seed for one batch (Python's hash() is salted per process; sha256 is not)."""
    digest = hashlib.sha256(f"{seed}:{task_id}:{batch_index}".encode()).hexdigest()
    return int(digest[:15], 16)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(src, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
    return ids


def _first_stop(text: str, stops: Sequence[str]) -> int:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def _truncate_at(sample: RawSample, pos: int, tokenizer: Any) -> None:
    """Cut the text at `pos` and keep the fewest tokens whose decoded text still covers it."""
    for i in range(len(sample.token_ids) + 1):
        if len(tokenizer.decode(sample.token_ids[:i], skip_special_tokens=True)) >= pos:
            break
    sample.token_ids = sample.token_ids[:i]
    sample.token_logprobs = sample.token_logprobs[:i]
    sample.text = sample.text[:pos]


def _logits_processors(temperature: float, top_p: float):
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if temperature > 0 and top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return procs


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompt_ids: Any,
    n_rows: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stops: Sequence[str],
    drop_finished: bool = True,
) -> list[RawSample]:
    """Sample `n_rows` continuations of `prompt_ids` (shape [1, L]); the caller seeds torch."""
    import torch

    eos = _eos_ids(model, tokenizer)
    procs = _logits_processors(temperature, top_p)
    samples = [RawSample() for _ in range(n_rows)]
    active = list(range(n_rows))  # sample index of each batch row
    with torch.inference_mode():
        out = model(input_ids=prompt_ids, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values  # transformers 5 returns it under this name
        cache.batch_repeat_interleave(n_rows)
        logits = out.logits[:, -1].to(torch.float32).expand(n_rows, -1).contiguous()
        for _ in range(max_new_tokens):
            logp = torch.log_softmax(logits, dim=-1)
            if temperature > 0:
                scores = procs(None, logits)  # temperature/top-p warpers ignore input_ids
                next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                next_tokens = torch.argmax(logits, dim=-1)
            chosen_logp = logp.gather(1, next_tokens[:, None]).squeeze(1).tolist()
            keep_rows: list[int] = []
            for row, idx in enumerate(active):
                s = samples[idx]
                if s.done:  # only without drop_finished: the row keeps running, its tokens are ignored
                    keep_rows.append(row)
                    continue
                tok = int(next_tokens[row])
                if tok in eos:
                    s.done, s.finish_reason = True, "stop"
                else:
                    s.token_ids.append(tok)
                    s.token_logprobs.append(float(chosen_logp[row]))
                    s.text = tokenizer.decode(s.token_ids, skip_special_tokens=True)
                    pos = _first_stop(s.text, stops)
                    if pos >= 0:
                        _truncate_at(s, pos, tokenizer)
                        s.done, s.finish_reason = True, "stop"
                if not (s.done and drop_finished):
                    keep_rows.append(row)
            if all(samples[i].done for i in active):
                break
            if len(keep_rows) < len(active):
                cache.batch_select_indices(torch.tensor(keep_rows))
                next_tokens = next_tokens[keep_rows]
                active = [active[r] for r in keep_rows]
            out = model(input_ids=next_tokens[:, None], cache=cache, use_cache=True)
            logits = out.logits[:, -1].to(torch.float32)
    return samples


def encode_prompt(tokenizer: Any, prompt: str) -> Any:
    """Token ids [1, L]; a prompt that already starts with BOS (chat template) gets no second one."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, return_tensors="pt", add_special_tokens=add_special)["input_ids"]


def sample_task(
    model: Any,
    tokenizer: Any,
    spec: TaskSpec,
    prompt: str,
    settings: SamplerSettings | dict[str, Any],
    seed: int | None = None,
    policy: str = "base",
    model_id: str = "",
    progress: Any = None,
) -> list[SampleRecord]:
    """K samples of one task, batched, each extracted and assembled into a candidate program."""
    s = settings if isinstance(settings, SamplerSettings) else SamplerSettings.from_dict(settings)
    import torch

    seed = s.seed if seed is None else seed
    stops = s.stops()
    prompt_ids = encode_prompt(tokenizer, prompt).to(model.device)
    psha = prompt_sha(prompt)
    records: list[SampleRecord] = []
    for b, first in enumerate(range(0, s.k, s.batch_size)):
        n = min(s.batch_size, s.k - first)
        torch.manual_seed(batch_seed(seed, spec.task_id, b))
        raws = generate_batch(
            model, tokenizer, prompt_ids, n, s.temperature, s.top_p, s.max_new_tokens, stops, s.drop_finished
        )
        for j, raw in enumerate(raws):
            records.append(_to_record(raw, first + j, spec, s, seed, policy, psha, prompt_ids.shape[1], model_id, tokenizer))
        if progress is not None:
            progress.update(n)
    return records


def _to_record(
    raw: RawSample,
    idx: int,
    spec: TaskSpec,
    s: SamplerSettings,
    seed: int,
    policy: str,
    psha: str,
    n_prompt: int,
    model_id: str,
    tokenizer: Any,
) -> SampleRecord:
    bad = next((i for i, x in enumerate(raw.token_logprobs) if not math.isfinite(x)), None)
    if bad is not None:  # every backend: a sample without a finite log-prob per token is never stored
        raise RuntimeError(f"task {spec.task_id} sample {idx}: token {bad} has log-prob {raw.token_logprobs[bad]!r} "
                           "(not finite); the model or backend produced invalid numbers")
    ext = extract(raw.text, s.prompt_format, raw.finish_reason)
    program = assemble_program(spec, s.prompt_format, ext.code) if ext.status != "no_code" else ""
    start, end = code_token_span(raw.token_ids, tokenizer, ext.char_start, ext.char_end) if ext.code else (0, 0)
    return SampleRecord(
        task_id=spec.task_id,
        policy=policy,
        seed=seed,
        sample_idx=idx,
        prompt_sha=psha,
        prompt_format=s.prompt_format,
        completion=raw.text,
        token_ids=list(raw.token_ids),
        token_logprobs=list(raw.token_logprobs),
        code_token_start=start,
        code_token_end=end,
        n_tokens=len(raw.token_ids),
        n_prompt_tokens=int(n_prompt),
        finish_reason=raw.finish_reason,
        extract_status=ext.status,
        code=ext.code,
        program=program,
        code_sha256=sha256_text(program) if program else "",
        model_id=model_id,
        temperature=float(s.temperature),
        top_p=float(s.top_p),
        max_new_tokens=int(s.max_new_tokens),
    )


def load_task_specs(tasks_json_path: str | Path) -> dict[str, TaskSpec]:
    """Read the tasks stage's JSON: a list of TaskSpec dicts, or {"tasks": [...]}."""
    data = json.loads(Path(tasks_json_path).read_text(encoding="utf-8"))
    items = data["tasks"] if isinstance(data, dict) else data
    return {d["task_id"]: TaskSpec.from_dict(d) for d in items}


def run_sampling(
    tasks_json_path: str | Path,
    task_id: str,
    settings: dict[str, Any],
    model_path: str | Path,
    out_parquet: str | Path,
    policy: str = "base",
    adapter_path: str | Path | None = None,
    model_and_tokenizer: tuple[Any, Any] | None = None,
) -> Path:
    """Sample one task and write its SampleRecords to `out_parquet` (atomically), with metadata.

    `settings` holds the SamplerSettings fields (k, temperature, top_p, max_new_tokens,
    batch_size, stop, seed, prompt_format, prompt_style, n_shots, prompt_reference,
    drop_finished).
    `adapter_path`: an optional PEFT (LoRA) adapter on top of `model_path` (TTT policies).
    """
    import pandas as pd
    from tqdm import tqdm

    from vegtts.models import load_model_and_tokenizer, model_id_of

    s = SamplerSettings.from_dict(settings)
    specs = load_task_specs(tasks_json_path)
    if task_id not in specs:
        raise ValueError(f"task {task_id!r} not in {tasks_json_path} (has: {sorted(specs)})")
    spec = specs[task_id]
    if model_and_tokenizer is None:
        model, tokenizer = load_model_and_tokenizer(model_path)
    else:
        model, tokenizer = model_and_tokenizer
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path)).eval()
    model_id = model_id_of(model_path) + (f"+{Path(adapter_path).name}" if adapter_path else "")
    prompt = build_prompt(spec, s.prompt_format, s.prompt_style, s.n_shots, tokenizer, reference=s.prompt_reference)
    t0 = time.perf_counter()
    with tqdm(total=s.k, desc=f"sample {task_id}", unit="sample") as bar:
        records = sample_task(model, tokenizer, spec, prompt, s, policy=policy, model_id=model_id, progress=bar)
    seconds = time.perf_counter() - t0
    df = pd.DataFrame([to_row(r) for r in records])
    meta = {
        "task_id": task_id,
        "policy": policy,
        "settings": s.to_dict(),
        "backend": {"name": "transformers", "model": model_id},
        "prompt_sha": prompt_sha(prompt),
        "prompt": prompt,
        "model_id": model_id,
        "model_path": str(model_path),
        "adapter_path": str(adapter_path) if adapter_path else None,
        "batch_seeds": [batch_seed(s.seed, task_id, b) for b in range((s.k + s.batch_size - 1) // s.batch_size)],
        "sampling_seconds": seconds,
        "n_new_tokens": int(df["n_tokens"].sum()) if len(df) else 0,
        "provenance": provenance(),
    }
    write_parquet(out_parquet, df, metadata=meta)
    log.info("%s: %d samples, %d tokens in %.1f s -> %s", task_id, len(df), meta["n_new_tokens"], seconds, out_parquet)
    return Path(out_parquet)
