"""Evaluate a samples parquet (records.SampleRecord rows) into an evaluations parquet."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from vegtts.evaluate.devices import evaluate_task
from vegtts.evaluate.runner import control_summary
from vegtts.evaluate.settings import EvalSettings
from vegtts.io import (
    digest_of,
    hardware_fingerprint,
    hardware_key,
    provenance,
    read_parquet,
    verify_artifact,
    write_parquet,
)
from vegtts.records import EvalRecord, TaskSpec, to_row

log = logging.getLogger(__name__)

SAMPLE_KEYS = ("task_id", "policy", "seed", "sample_idx")


def _as_spec(task: TaskSpec | dict[str, Any] | str | Path) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, dict):
        return TaskSpec.from_dict(task)
    verify_artifact(task)
    return TaskSpec.from_dict(json.loads(Path(task).read_text(encoding="utf-8")))


def evaluate_samples_file(
    samples_parquet: str | Path,
    task: TaskSpec | dict[str, Any] | str | Path,
    settings_dict: dict[str, Any] | EvalSettings | None,
    cache_dir: str | Path | None,
    out_parquet: str | Path,
) -> pd.DataFrame:
    """One row per sample: task_id, policy, seed, sample_idx + every EvalRecord field.

    `task` is a TaskSpec (or its dict, or a JSON file of it).  The parquet footer carries
    {settings, hardware, provenance, aa_control} (the task's A/A control, docs/evaluator.md); the
    manifest records the digest of the samples it was made from (a later check finds an evaluation
    whose samples were regenerated since: vegtts.store).  The samples are read verified
    (vegtts.io.CorruptArtifactError if they do not match their digest).
    """
    spec = _as_spec(task)
    settings = settings_dict if isinstance(settings_dict, EvalSettings) else EvalSettings.from_dict(settings_dict)
    samples = read_parquet(samples_parquet)
    samples_digest = digest_of(samples_parquet)
    missing = [c for c in (*SAMPLE_KEYS, "code_sha256", "program") if c not in samples.columns]
    if missing:
        raise ValueError(f"{samples_parquet}: samples parquet lacks columns {missing}")
    other = sorted(set(samples["task_id"]) - {spec.task_id})
    if other:
        raise ValueError(f"{samples_parquet}: samples of task(s) {other}, but the task spec is {spec.task_id!r}")
    candidates = [(str(sha or ""), str(prog or "")) for sha, prog in zip(samples["code_sha256"], samples["program"])]
    records = evaluate_task(spec, candidates, settings, Path(cache_dir) if cache_dir else None)
    rows = []
    for (_, sample), record in zip(samples.iterrows(), records):
        row = {k: sample[k] for k in SAMPLE_KEYS}
        row.update({k: v for k, v in to_row(record).items() if k != "task_id"})
        rows.append(row)
    columns = list(SAMPLE_KEYS) + [k for k in EvalRecord.__dataclass_fields__ if k != "task_id"]
    df = pd.DataFrame(rows, columns=columns)
    metadata = {
        "settings": settings.to_dict(),
        "settings_hash": settings.settings_hash(),
        "hardware": {**hardware_fingerprint(), "key": hardware_key()},
        "provenance": provenance(task_id=spec.task_id, task_source_sha256=spec.source_sha256, samples=str(samples_parquet)),
        "aa_control": control_summary(spec, settings),
    }
    write_parquet(out_parquet, df, metadata, inputs={"samples": samples_digest})
    n_ok = int((df["status"] == "ok").sum()) if len(df) else 0
    log.info("task %s: %d samples evaluated, %d ok, %d from cache", spec.task_id, len(df), n_ok, int(df["cached"].sum()) if len(df) else 0)
    return df
