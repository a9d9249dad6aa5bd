"""Sampling and prompt scoring with vLLM in-process (`vllm.LLM`), for GPU nodes.

Targets vLLM 0.10-0.11 (V1 engine: `LLM.generate(prompts, SamplingParams, lora_request=...)`,
`CompletionOutput.logprobs` as a list of {token_id: Logprob}, raw (unscaled) log-probs by default).
vLLM is imported lazily: without it, choosing `sampling.backend: vllm` fails with the install command.
Not exercised on the CPU machines this project is tested on: the request/response conversion it
shares with the HTTP backend (vegtts.sampling.conversion) is, and its vLLM-specific calls are
unit-tested against vLLM-shaped objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from vegtts.config import dataclass_from_settings
from vegtts.sampling.conversion import (
    Generation,
    chosen_prompt_logprobs,
    generation_from_vllm_output,
    request_seed,
    request_sizes,
    sampling_params,
)
from vegtts.sampling.transformers_backend import SamplerSettings

INSTALL_HINT = "pip install 'vllm>=0.10,<0.12' (on a Linux machine with a CUDA GPU; see README 'Sampling backends')"
IDENTITY_KEYS = ("dtype", "n_per_request", "tensor_parallel_size")


@dataclass
class VLLMSettings:
    dtype: str = "auto"
    n_per_request: int = 0  # 0: all K samples of a task in one request (one prefill)
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    max_lora_rank: int = 16
    enforce_eager: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VLLMSettings":
        return dataclass_from_settings(cls, d, "sampling.vllm")


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"sampling.backend: vllm needs vLLM, which is not installed ({e}). {INSTALL_HINT}") from None
    return vllm


@lru_cache(maxsize=2)
def _engine(model_path: str, dtype: str, tp: int, mem: float, max_len: int | None, lora_rank: int, eager: bool) -> Any:
    vllm = import_vllm()
    return vllm.LLM(
        model=model_path,
        dtype=dtype,
        tensor_parallel_size=tp,
        gpu_memory_utilization=mem,
        max_model_len=max_len,
        enable_lora=True,
        max_lora_rank=lora_rank,
        enforce_eager=eager,
    )


def engine_for(model_path: str | Path, v: VLLMSettings) -> Any:
    return _engine(str(model_path), v.dtype, v.tensor_parallel_size, v.gpu_memory_utilization, v.max_model_len, v.max_lora_rank, v.enforce_eager)


def vllm_sampling_params(vllm: Any, s: SamplerSettings, n: int, seed: int) -> Any:
    """The same request as the HTTP backend's, as vllm.SamplingParams; logprobs=0 returns the sampled token's."""
    p = sampling_params(s, n, seed)
    return vllm.SamplingParams(
        n=p["n"], temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"], seed=p["seed"], stop=p["stop"], logprobs=0
    )


def lora_request(vllm_lora_request_cls: Any, adapter_path: str | Path | None) -> Any:
    """A LoRARequest for a TTT adapter folder (ids must be unique and > 0 per adapter within the engine)."""
    if adapter_path is None:
        return None
    path = str(Path(adapter_path).resolve())
    lora_id = 1 + (int.from_bytes(path.encode()[-8:].rjust(8, b"\0"), "big") % (2**31 - 2))
    return vllm_lora_request_cls(Path(path).name, lora_id, path)


def sample_vllm(
    prompt: str,
    task_id: str,
    s: SamplerSettings,
    backend_settings: dict[str, Any],
    model_path: str | Path,
    adapter_path: str | Path | None = None,
    progress: Any = None,
    llm: Any = None,
) -> tuple[list[Generation], dict[str, Any]]:
    """K generations of one prompt: requests of n_per_request completions, each with its own seed."""
    vllm = import_vllm()
    from vllm.lora.request import LoRARequest

    v = VLLMSettings.from_dict(backend_settings)
    llm = llm if llm is not None else engine_for(model_path, v)
    sizes = request_sizes(s.k, v.n_per_request or s.k)
    params = [vllm_sampling_params(vllm, s, n, request_seed(s.seed, task_id, i)) for i, n in enumerate(sizes)]
    outputs = llm.generate([prompt] * len(sizes), params, lora_request=lora_request(LoRARequest, adapter_path), use_tqdm=False)
    gens = [generation_from_vllm_output(o) for req in outputs for o in sorted(req.outputs, key=lambda o: o.index)]
    if progress is not None:
        progress.update(len(gens))
    meta = {"name": "vllm", "model": str(model_path), "vllm_version": getattr(vllm, "__version__", "unknown"), "settings": vars(v)}
    return gens, meta


def score_vllm(llm: Any, prompt_ids: Sequence[int], completions: Sequence[Sequence[int]], adapter_path: str | Path | None = None) -> list[list[float]]:
    """Teacher-forced log-probs of each completion's tokens after `prompt_ids` (vLLM prompt_logprobs)."""
    vllm = import_vllm()
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    prompts = [TokensPrompt(prompt_token_ids=list(prompt_ids) + list(c)) for c in completions]
    outputs = llm.generate(prompts, params, lora_request=lora_request(LoRARequest, adapter_path), use_tqdm=False)
    return [chosen_prompt_logprobs(o.prompt_logprobs, list(prompt_ids) + list(c), len(prompt_ids)) for o, c in zip(outputs, completions)]
