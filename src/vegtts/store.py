"""Is the store whole?  Missing, corrupt and stale artifacts, found and moved aside.

The store (``<results>/store/``) holds every expensive artifact under a content key, each with a
digest manifest (vegtts.io).  An artifact is

- **missing**: planned but absent.  `rule all` requires every planned artifact, so Snakemake
  regenerates it (on its own, Snakemake >= 7.7 does not regenerate a missing intermediate file while
  everything downstream of it is up to date: "Nothing to be done" over a hole);
- **corrupt**: its bytes do not match its manifest (truncated, bit-flipped, overwritten), or it has
  no manifest;
- **stale**: an evaluation whose manifest records a samples digest that is not the digest of the
  samples artifact now at its place (the samples were regenerated after it was evaluated).

Corrupt and stale artifacts are moved (with their manifests) to
``<store>/quarantine/<UTC time>/<same relative path>``, which makes them missing, so the next run
regenerates them; nothing is deleted.  `check_planned` runs at the start of every workflow run
(cheap: a file whose size, mtime and manifest digest are those it verified last time is not hashed
again); `verify_store` (``vegtts store verify``) hashes everything, plans or no plan, and also checks
every per-candidate evaluation-cache entry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vegtts.io import (
    DIR_MANIFEST,
    CorruptArtifactError,
    manifest_path,
    read_manifest,
    sha256_file,
    verify_dir,
    write_json,
)

log = logging.getLogger(__name__)

STATE_FILE = ".cache/verified.json"
QUARANTINE = "quarantine"
# folders of the store that hold artifacts with manifests (evalcache entries carry their own digest)
ARTIFACT_STAGES = ("tasks", "samples", "evaluations", "scores")


@dataclass
class StoreReport:
    checked: int = 0  # artifacts checked (files and folders)
    hashed: int = 0  # of them, hashed now (the rest matched the state of their last verification)
    missing: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)  # path -> problem
    stale: dict[str, str] = field(default_factory=dict)
    bad_cache_entries: dict[str, str] = field(default_factory=dict)
    moved_to: str | None = None  # quarantine folder, if anything was moved

    @property
    def whole(self) -> bool:
        return not (self.missing or self.corrupt or self.stale or self.bad_cache_entries)

    def lines(self) -> list[str]:
        """What a user needs to read, one finding per line."""
        out = [f"store: {p} is missing; it will be regenerated" for p in self.missing]
        out += [f"store: {p} is corrupt ({why})" for p, why in self.corrupt.items()]
        out += [f"store: {p} is stale ({why})" for p, why in self.stale.items()]
        out += [f"store: evaluation-cache entry {p} is bad ({why})" for p, why in self.bad_cache_entries.items()]
        if self.moved_to:
            out.append(f"store: moved {len(self.corrupt) + len(self.stale) + len(self.bad_cache_entries)} bad "
                       f"artifact(s) to {self.moved_to}; rerun snakemake to regenerate them")
        return out


class _State:
    """(size, mtime_ns, sha256) of every file the last check verified, by path relative to the store."""

    def __init__(self, store: Path, trust: bool):
        self.store = store
        self.path = store / STATE_FILE
        self.trust = trust  # False: hash everything (but still record what was verified)
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def unchanged(self, file: Path, sha256: str) -> bool:
        if not self.trust or not file.is_file():
            return False
        st = file.stat()
        return self.entries.get(self._rel(file)) == [st.st_size, st.st_mtime_ns, sha256]

    def remember(self, file: Path, sha256: str) -> None:
        st = file.stat()
        self.entries[self._rel(file)] = [st.st_size, st.st_mtime_ns, sha256]
        self.changed = True

    def forget(self, file: Path) -> None:
        if self.entries.pop(self._rel(file), None) is not None:
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            write_json(self.path, self.entries)
        except OSError as exc:  # read-only store: verify everything again next time
            log.debug("cannot save the store's verification state: %s", exc)

    def _rel(self, file: Path) -> str:
        try:
            return str(file.relative_to(self.store))
        except ValueError:
            return str(file)


def _check_file(path: Path, state: _State, report: StoreReport) -> str | None:
    """The problem of a file artifact, or None if it matches its manifest."""
    report.checked += 1
    try:
        entry = read_manifest(path)
    except CorruptArtifactError as exc:
        return exc.problem
    if state.unchanged(path, entry["sha256"]):
        return None
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{size} bytes, its manifest says {entry['bytes']}: truncated or overwritten"
    report.hashed += 1
    if sha256_file(path) != entry["sha256"]:
        return "its sha256 does not match its manifest: corrupted"
    state.remember(path, entry["sha256"])
    return None


def _check_dir(path: Path, state: _State, report: StoreReport) -> str | None:
    manifest = path / DIR_MANIFEST
    report.checked += 1
    try:
        entry = json.loads(manifest.read_text(encoding="utf-8"))
        files = entry["files"]
        if all(state.unchanged(path / rel, want["sha256"]) for rel, want in files.items()):
            return None
    except FileNotFoundError:
        return f"has no digest manifest ({DIR_MANIFEST} is missing)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest is unreadable ({exc})"
    report.hashed += 1
    try:
        verify_dir(path)
    except CorruptArtifactError as exc:
        return exc.problem
    for rel, want in files.items():
        state.remember(path / rel, want["sha256"])
    return None


def _samples_of(evaluation: Path, store: Path) -> Path | None:
    """The samples artifact an evaluation was made from: evaluations/<s>/<e>/<seed>/<f> -> samples/<s>/<seed>/<f>."""
    try:
        rel = evaluation.relative_to(store / "evaluations")
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) != 4:
        return None
    return store / "samples" / parts[0] / parts[2] / parts[3]


def _stale_because(evaluation: Path, store: Path) -> str | None:
    """Why an (intact) evaluation no longer belongs to the samples at its place, or None."""
    try:
        recorded = read_manifest(evaluation).get("inputs", {}).get("samples")
    except CorruptArtifactError:
        return None
    samples = _samples_of(evaluation, store)
    if not recorded or samples is None or not samples.exists():
        return None
    try:
        current = read_manifest(samples)["sha256"]
    except CorruptArtifactError:
        return None  # the samples themselves are reported as corrupt
    if current != recorded:
        return f"made from samples {recorded[:12]}..., but {samples.name} is now {current[:12]}..."
    return None


def _store_of(paths: Iterable[str]) -> Path | None:
    for p in paths:
        for parent in Path(p).parents:
            if parent.name == "store":
                return parent
    return None


def quarantine(store: Path, paths: Iterable[Path], state: _State | None = None) -> Path | None:
    """Move artifacts (and their manifests) out of the store, under quarantine/<UTC time>/."""
    paths = [Path(p) for p in paths]
    if not paths:
        return None
    target_root = store / QUARANTINE / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for path in paths:
        for item in (path, manifest_path(path)):
            if not item.exists():
                continue
            try:
                rel = item.relative_to(store)
            except ValueError:
                rel = Path(item.name)
            dest = target_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest = dest.with_name(f"{dest.name}.{os.getpid()}")
            shutil.move(str(item), str(dest))
            log.warning("moved %s to %s", item, dest)
        if state is not None:
            if path.is_dir():
                for rel in list(state.entries):
                    if rel.startswith(state._rel(path) + "/"):
                        state.entries.pop(rel)
                        state.changed = True
            else:
                state.forget(path)
    return target_root


def check_planned(artifacts: Iterable[str], *, full: bool = False, repair: bool = True) -> StoreReport:
    """Check the planned store artifacts (paths); move corrupt and stale ones aside if `repair`.

    Not `full`: a file whose size, mtime and digest are those of its last verification is trusted.
    """
    artifacts = list(artifacts)
    report = StoreReport()
    store = _store_of(artifacts)
    if store is None or not store.is_dir():
        return report
    state = _State(store, trust=not full)
    for name in artifacts:
        path = Path(name)
        if not path.exists():
            report.missing.append(name)
            continue
        problem = _check_dir(path, state, report) if path.is_dir() else _check_file(path, state, report)
        if problem:
            report.corrupt[name] = problem
    for name in artifacts:
        path = Path(name)
        if name in report.corrupt or not path.is_file() or "/evaluations/" not in name:
            continue
        why = _stale_because(path, store)
        if why:
            report.stale[name] = why
    if repair:
        report.moved_to = _str(quarantine(store, [Path(p) for p in [*report.corrupt, *report.stale]], state))
    state.save()
    return report


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def stored_artifacts(store: Path) -> list[Path]:
    """Every artifact in the store's stage folders (files and TTT adapter folders), planned or not."""
    found: list[Path] = []
    for stage in ARTIFACT_STAGES:
        root = store / stage
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.startswith(".") and (p.suffix == ".parquet" or p.name == "tasks.json"):
                found.append(p)
    ttt = store / "ttt"
    if ttt.is_dir():
        found += sorted(p for p in ttt.glob("*/adapter") if p.is_dir())
    return found


def verify_store(results_dir: str | Path, *, repair: bool = True, planned: Iterable[str] = ()) -> StoreReport:
    """Hash every artifact of `<results_dir>/store` and every evaluation-cache entry.

    `planned` (paths a config plans) are also reported when missing.  With `repair`, corrupt and
    stale artifacts and bad cache entries are moved to the quarantine folder.
    """
    from vegtts.evaluate.cache import entry_problem

    store = Path(results_dir) / "store"
    if not store.is_dir():
        raise FileNotFoundError(f"{store} does not exist (is {results_dir!r} the workflow's results_dir?)")
    paths = sorted({*map(str, stored_artifacts(store)), *map(str, planned)})
    report = check_planned(paths, full=True, repair=False)
    cache_root = store / "evalcache"
    for entry in sorted(cache_root.rglob("*.json")) if cache_root.is_dir() else []:
        if entry.name.startswith(".") or "cuda_builds" in entry.parts:
            continue
        problem = entry_problem(entry)
        if problem:
            report.bad_cache_entries[str(entry)] = problem
    if repair:
        bad = [Path(p) for p in [*report.corrupt, *report.stale, *report.bad_cache_entries]]
        state = _State(store, trust=True)
        report.moved_to = _str(quarantine(store, bad, state))
        state.save()
    return report
