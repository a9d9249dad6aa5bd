"""Sampling stage: prompts and backends (transformers on CPU/GPU)."""


def run_sampling(*args, **kwargs):
    """Sample one task (see vegtts.sampling.transformers_backend.run_sampling); imports torch lazily."""
    from vegtts.sampling.transformers_backend import run_sampling as _run

    return _run(*args, **kwargs)
