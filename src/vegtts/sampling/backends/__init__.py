"""Sampling backends: one module each, registering one SamplingBackend in BACKENDS.

A new backend is a module here and its name in the import line below (docs/extending.md).
"""

from vegtts.sampling.backends import openai, transformers, vllm  # noqa: F401  (each registers its backend)
from vegtts.sampling.backends.base import BACKENDS, Generated, GenerationRequest, SamplingBackend

__all__ = ["BACKENDS", "Generated", "GenerationRequest", "SamplingBackend"]
