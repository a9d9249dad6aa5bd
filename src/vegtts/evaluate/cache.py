"""Per-candidate verdict cache: one JSON file per (hardware, settings, task source, program).

Path: ``<cache_dir>/<hardware_key>/<settings_hash>/<task source_sha256[:12]>/<code_sha256>.json``.
The hardware key is resolved on the machine that evaluates (never at workflow parsing), so each
node of a heterogeneous cluster keeps its own verdicts while all nodes plan the same artifact keys.

Files are written atomically (temp file + rename in the same folder), so concurrent writers in
several processes can only ever leave one complete file.  Every entry records the key it was filed
under (`entry_key`: hardware, settings, task source, program) and a digest of its content
(`entry_digest`); `load` serves an entry only if it is readable, its digest matches, it claims the
key and program of the place it was found at, and its verdict is self-consistent.  Anything else is
discarded with a warning and the candidate is evaluated again (the new verdict replaces the entry).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vegtts.evaluate.settings import EvalSettings
from vegtts.io import canonical_json, hardware_key, sha256_text, short_hash, write_json
from vegtts.records import STATUSES, EvalRecord, TaskSpec, from_row, to_row

log = logging.getLogger(__name__)

ENTRY_KEY = "entry_key"
ENTRY_DIGEST = "entry_digest"


def settings_dir_name(spec: TaskSpec, settings: EvalSettings) -> str:
    # the task's tolerances decide correctness too, so they belong to the key
    return short_hash({"settings": settings.cache_key(), "atol": spec.atol, "rtol": spec.rtol, "atol_scaled": spec.atol_scaled,
                       "varied_inputs": spec.varied_inputs})


def record_path(cache_dir: Path, spec: TaskSpec, settings: EvalSettings, code_sha256: str) -> Path:
    return Path(cache_dir) / hardware_key() / settings_dir_name(spec, settings) / spec.source_sha256[:12] / f"{code_sha256}.json"


def claimed_key(path: Path) -> dict[str, str]:
    """The key an entry at `path` must claim: the folders it is filed under and its program."""
    path = Path(path)
    parents = [p.name for p in path.parents[:3]] + ["", "", ""]
    return {"task_source": parents[0], "settings": parents[1], "hardware": parents[2], "code_sha256": path.stem}


def _digest(row: dict[str, Any]) -> str:
    return sha256_text(canonical_json({k: v for k, v in row.items() if k != ENTRY_DIGEST}))


def _row_problem(row: Any, path: Path) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    if ENTRY_DIGEST not in row or ENTRY_KEY not in row:
        return "no digest (written by an older vegtts or by hand)"
    if row[ENTRY_DIGEST] != _digest(row):
        return "its content does not match its digest (edited or corrupted)"
    if row[ENTRY_KEY] != claimed_key(path):
        return f"filed under another key than it claims ({row[ENTRY_KEY]})"
    if row.get("code_sha256") != path.stem:
        return f"a verdict on program {str(row.get('code_sha256'))[:12]}..., filed under {path.stem[:12]}..."
    if row.get("status") not in STATUSES or not isinstance(row.get("correct"), bool):
        return f"status {row.get('status')!r} / correct {row.get('correct')!r} is not a verdict"
    if row["correct"] != (row["status"] == "ok"):
        return f"status {row['status']!r} contradicts correct={row['correct']}"
    return None


def entry_problem(path: Path) -> str | None:
    """Why the entry at `path` must not be served, or None if it is sound (used by `vegtts store verify`)."""
    try:
        row = json.loads(Path(path).read_text(encoding="utf-8"))
        problem = _row_problem(row, Path(path))
        if problem is None:
            from_row(EvalRecord, row)
        return problem
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, TypeError) as exc:
        return f"unreadable ({exc})"


def load(path: Path) -> EvalRecord | None:
    """The cached verdict at `path`, or None (a miss, or an entry that failed its checks)."""
    try:
        row = json.loads(Path(path).read_text(encoding="utf-8"))
        problem = _row_problem(row, Path(path))
        if problem is None:
            return from_row(EvalRecord, row)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        problem = f"unreadable ({exc})"
    log.warning("evaluation cache: discarding %s: %s; the candidate is evaluated again", path, problem)
    return None


def store(path: Path, record: EvalRecord) -> None:
    row = to_row(record)
    row["cached"] = False
    row[ENTRY_KEY] = claimed_key(Path(path))
    row[ENTRY_DIGEST] = _digest(row)
    write_json(path, row)
