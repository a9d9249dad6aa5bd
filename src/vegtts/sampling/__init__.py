"""Sampling stage: prompts and backends (transformers here; an OpenAI-compatible server; vLLM in-process: see remote.py)."""


def run_sampling(*args, **kwargs):
    """Sample one task (see vegtts.sampling.transformers_backend.run_sampling); imports torch lazily."""
    from vegtts.sampling.transformers_backend import run_sampling as _run

    return _run(*args, **kwargs)
