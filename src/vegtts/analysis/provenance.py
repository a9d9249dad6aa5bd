"""What every table and report names about the code and the stored artifacts it came from.

`code_version()`: the git commit of the package's checkout when there is one (with a flag for
uncommitted changes under the package), and always a fingerprint of the package's source files, so
that an installed copy without git is identified too.  Read at run time, never a workflow
parameter: a new commit alone does not rerun the analysis.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from typing import Any

from vegtts.io import PACKAGE_ROOT, code_fingerprint, short_hash

log = logging.getLogger(__name__)
UNAVAILABLE = "unavailable"


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """{"git_commit", "git_dirty", "package_fingerprint"}; git fields are "unavailable" without git."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", ".") if commit else None
    return {
        "git_commit": commit or UNAVAILABLE,
        "git_dirty": (bool(status) if status is not None else UNAVAILABLE),
        "package_fingerprint": code_fingerprint("."),
    }


def config_hash(config: Mapping[str, Any], without: tuple[str, ...] = ()) -> str:
    """Short hash of a (validated) experiment config without the top-level keys in `without`: the
    same config gives the same hash.  The base analysis hashes every key but `ttt` (a TTT change
    does not touch it, and must not rerun it); the TTT tables hash the whole config."""
    return short_hash({k: v for k, v in dict(config).items() if k not in without})


def run_provenance(base: Mapping[str, Any], config_hash_: str = "", store_keys: Mapping[str, Any] | None = None,
                   config_hash_scope: str = "") -> dict[str, Any]:
    """`base` (versions, hardware: vegtts.io.provenance) plus config hash, store keys and code version."""
    out = {**base, "config_hash": config_hash_ or UNAVAILABLE}
    if config_hash_scope:
        out["config_hash_scope"] = config_hash_scope
    return {**out, "store": dict(store_keys or {}), "code": code_version()}
