"""Sampling stage: prompts and backends (transformers on CPU/GPU)."""
