"""openai: an OpenAI-compatible HTTP server (vllm serve, SGLang, llama.cpp's server, hosted APIs);
the client, its retries and its request journal are vegtts.sampling.openai_backend."""

from __future__ import annotations

import json
from typing import Any

from vegtts.sampling.backends.base import BACKENDS, Generated, GenerationRequest, SamplingBackend
from vegtts.sampling.openai_backend import IDENTITY_KEYS, OpenAISettings, public_url, sample_remote
from vegtts.sampling.prompts import chat_user_turn


def check_settings(sampling: dict[str, Any]) -> None:
    if not (sampling.get("openai") or {}).get("model"):
        raise ValueError("config key 'sampling.openai.model' is required with sampling.backend: openai (the served model's name)")


def generate(request: GenerationRequest) -> Generated:
    s, o = request.settings, OpenAISettings.from_dict(request.backend_settings)
    if o.api == "chat":  # the server applies its chat template to a user turn made from the plain prompt
        if s.prompt_style != "completion":
            raise ValueError("sampling.openai.api: chat needs prompt.style: completion (the server applies its own chat template)")
        text = chat_user_turn(request.prompt)
        sent = json.dumps({"messages": [{"role": "user", "content": text}]})
    else:
        text = sent = request.prompt
    gens, server = sample_remote(text, request.task_id, s, o, request.journal, request.progress, request.adapter_path)
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
    return Generated(gens, meta, sent)


BACKENDS.register(SamplingBackend("openai", generate=generate, identity_keys=IDENTITY_KEYS, check_settings=check_settings))
