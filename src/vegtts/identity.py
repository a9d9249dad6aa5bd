"""Content identities of a stage's inputs: problem files and model weights.

Keys must change when an input's *content* changes, not only when a setting does: an edited problem
file, new weights in a local model folder or a new snapshot of a hub model give new keys, so the
store never serves samples of the old content.  Everything here is cheap enough for workflow parsing
(no torch): problem files are small and read whole; model files are hashed once and the digest is
cached by (path, size, mtime), so a later parse only stats them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from vegtts.io import code_fingerprint, sha256_file, sha256_text, short_hash, write_json

log = logging.getLogger(__name__)

# tasks/ code that resolves problems; the builtin problem files themselves enter each task's key
# through its content, so editing one problem does not change every task's key.
TASKS_CODE_EXCLUDE = ("tasks/builtin", "tasks/builtin_gpu")


def tasks_code() -> str:
    return code_fingerprint("tasks", exclude=TASKS_CODE_EXCLUDE)


def task_identity(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """What a resolved task is: its full spec (source after shape settings, name, tolerances, ...)."""
    fields = ("task_id", "name", "suite", "source_sha256", "forward_args", "description", "atol", "rtol", "tags")
    return {"spec": {k: spec_dict.get(k) for k in fields}, "code": tasks_code()}


def task_key(spec_dict: dict[str, Any]) -> str:
    return short_hash(task_identity(spec_dict))


def task_keys(suite_cfg: dict[str, Any], task_ids: list[str]) -> dict[str, str]:
    """Task id -> key over the content of its problem file (any suite); reads and parses the files."""
    from vegtts.tasks import load_tasks

    specs = load_tasks({**suite_cfg, "ids": list(task_ids)})
    return {spec.task_id: task_key(spec.to_dict()) for spec in specs}


# --- models -------------------------------------------------------------------------------------
def cached_sha256(path: Path, cache_dir: Path | None) -> str:
    """sha256 of a file, cached by (resolved path, size, mtime) under `cache_dir` (None: no cache)."""
    path = Path(path).resolve()
    st = path.stat()
    if cache_dir is None:
        return sha256_file(path)
    entry_file = Path(cache_dir) / f"{sha256_text(str(path))[:32]}.json"
    try:
        entry = json.loads(entry_file.read_text(encoding="utf-8"))
        if entry["path"] == str(path) and entry["bytes"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
            return str(entry["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.info("hashing %s (%.0f MB; cached for later runs)", path, st.st_size / 1e6)
    digest = sha256_file(path)
    try:
        write_json(entry_file, {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    except OSError as exc:  # a read-only store: hash again next time
        log.debug("cannot cache the digest of %s: %s", path, exc)
    return digest


def _model_files(folder: Path) -> list[Path]:
    """Every file of a model folder (weights, tokenizer, configs), hidden folders left out."""
    out = []
    for sub, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(sub) / f for f in sorted(files) if not f.startswith(".")]
    return out


def folder_fingerprint(folder: Path, cache_dir: Path | None) -> str:
    """Digest of every file (name and content) of a local model folder."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): cached_sha256(p, cache_dir) for p in _model_files(folder)}
    if not files:
        raise ValueError(f"config key 'model.source': folder {str(folder)!r} holds no files")
    return short_hash(files, 16)


def hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (None if it is not in the local cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def hub_fingerprint(snapshot: Path, cache_dir: Path | None) -> str:
    """Digest of a hub snapshot: each file's blob name (the hub cache names blobs by their content
    hash), or the file's sha256 where the cache holds copies instead of links."""
    files = {}
    for p in _model_files(snapshot):
        files[str(p.relative_to(snapshot))] = (
            "blob:" + Path(os.readlink(p)).name if p.is_symlink() else cached_sha256(p, cache_dir)
        )
    return short_hash(files, 16)


def model_identity(source: str, model_path: str, dtype: str, cache_dir: Path | None,
                   default_source: str, default_package: str) -> dict[str, Any]:
    """What the sampled model is, by content: the default model's package and version, a local
    folder's file digests, or a hub snapshot's blobs.  The folder's path is not part of it."""
    if source == default_source:
        from importlib import metadata

        try:
            version = metadata.version(default_package)
        except metadata.PackageNotFoundError:
            version = "not-installed"
        return {"source": source, "package": default_package, "version": version, "dtype": dtype}
    path = Path(model_path)
    if path.is_dir():
        return {"folder": folder_fingerprint(path, cache_dir), "dtype": dtype}
    snapshot = hub_snapshot(source)
    if snapshot is None:
        raise ValueError(f"config key 'model.source': {source!r} is not in the Hugging Face cache")
    return {"hub": source, "snapshot": hub_fingerprint(snapshot, cache_dir), "dtype": dtype}
