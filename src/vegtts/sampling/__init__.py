"""Sampling stage: prompts, the backends (backends/: transformers, an OpenAI-compatible server, vLLM
in-process) and the stage that runs any of them on one task (stage.py)."""


def run_sampling(*args, **kwargs):
    """Sample one task (see vegtts.sampling.transformers_backend.run_sampling); imports torch lazily."""
    from vegtts.sampling.transformers_backend import run_sampling as _run

    return _run(*args, **kwargs)
