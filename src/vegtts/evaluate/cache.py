"""Per-candidate verdict cache: one JSON file per (hardware, settings, task source, program).

Path: ``<cache_dir>/<hardware_key>/<settings_hash>/<task source_sha256[:12]>/<code_sha256>.json``.
Files are written atomically (temp file + rename in the same folder), so concurrent writers in
several processes can only ever leave one complete file; a reader ignores anything unreadable.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vegtts.evaluate.settings import EvalSettings
from vegtts.io import hardware_key, short_hash, write_json
from vegtts.records import EvalRecord, TaskSpec, from_row, to_row

log = logging.getLogger(__name__)


def settings_dir_name(spec: TaskSpec, settings: EvalSettings) -> str:
    # the task's tolerances decide correctness too, so they belong to the key
    return short_hash({"settings": settings.cache_key(), "atol": spec.atol, "rtol": spec.rtol, "atol_scaled": spec.atol_scaled,
                       "varied_inputs": spec.varied_inputs})


def record_path(cache_dir: Path, spec: TaskSpec, settings: EvalSettings, code_sha256: str) -> Path:
    return Path(cache_dir) / hardware_key() / settings_dir_name(spec, settings) / spec.source_sha256[:12] / f"{code_sha256}.json"


def load(path: Path) -> EvalRecord | None:
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
        return from_row(EvalRecord, row)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring unreadable cache entry %s: %s", path, exc)
        return None


def store(path: Path, record: EvalRecord) -> None:
    row = to_row(record)
    row["cached"] = False
    write_json(path, row)
