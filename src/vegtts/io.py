"""Atomic writes, digests of artifacts, content hashes and provenance.

A killed job never leaves a half-written artifact: everything is written to a temporary file
in the target directory, flushed to disk (file and folder fsync) and renamed into place.

Every store artifact carries its own digest: a file artifact ``x.parquet`` has a manifest
``x.parquet.manifest.json`` beside it (sha256, size, and the digests of the inputs it was made
from), written before the artifact is renamed into place; a folder artifact (a TTT adapter) has
``vegtts_manifest.json`` inside.  Readers check the digest (`verify_artifact`, `read_parquet`) and
refuse a mismatch with an error naming the file and the command that repairs the store.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent

MANIFEST_SUFFIX = ".manifest.json"  # beside a file artifact: <artifact><suffix>
DIR_MANIFEST = "vegtts_manifest.json"  # inside a folder artifact
MANIFEST_FORMAT = 1
# For tests only: pretend to be another machine (a different hardware identity), e.g. to run a
# job the way a cluster node with another CPU would.  Never set it for real measurements.
HARDWARE_OVERRIDE_ENV = "VEGTTS_TEST_HARDWARE"


class CorruptArtifactError(ValueError):
    """An artifact does not match its digest (or has none): it is never served."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}. {repair_hint(self.path)}")


def repair_hint(path: Path) -> str:
    """The command that repairs a store holding `path`."""
    for parent in path.parents:
        if parent.name == "store":
            return (f"Repair: `vegtts store verify {parent.parent}` moves corrupt artifacts aside, then rerun "
                    "snakemake to regenerate them")
    return "Repair: delete it and rerun the command that wrote it"


def _process_umask() -> int:
    # Read, not set-and-restore: os.umask(0) would briefly give every other thread's new files and
    # folders a 0 umask (the evaluator stores cache entries from a thread pool).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new entry in folder `path` durable (not every filesystem supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file and folder under `folder` (before it is renamed into place)."""
    root = Path(folder)
    for sub, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(sub) / name)
        fsync_dir(sub)


@contextmanager
def atomic_path(path: str | os.PathLike, *, manifest: bool = False, inputs: dict[str, str] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds.

    The temporary file is fsynced before the rename and the folder after it, so a crash (power
    loss, not just a killed process) leaves the old artifact or the new one, never a torn file.
    With `manifest`, the artifact's manifest (sha256, size, `inputs`) is written before the rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the artifact the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_process_umask())
        fsync_file(tmp_path)
        if manifest:
            write_manifest(target, tmp_path, inputs)
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sibling_temp_dir(target: Path) -> Path:
    """A fresh temporary folder next to `target`, to be renamed onto it once complete; with the
    permissions a plain mkdir gives (mkdtemp makes 0700, which a group sharing the project's
    results could not read after the rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_process_umask())
    return tmp


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any, *, manifest: bool = False, inputs: dict[str, str] | None = None) -> None:
    with atomic_path(path, manifest=manifest, inputs=inputs) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | os.PathLike, df: Any, metadata: dict[str, Any] | None = None,
                  inputs: dict[str, str] | None = None) -> None:
    """Write a DataFrame atomically with its manifest; `metadata` is stored as JSON in the parquet
    footer, `inputs` (role -> sha256 of an input artifact) in the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"vegtts"] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path, manifest=True, inputs=inputs) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> Any:
    """A verified read: the parquet must match its manifest (CorruptArtifactError otherwise)."""
    import pandas as pd

    verify_artifact(path)
    return pd.read_parquet(path, columns=columns)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"vegtts")
    return json.loads(raw) if raw else {}


# --- manifests: every artifact carries its digest ---------------------------------------------
def manifest_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def write_manifest(artifact: str | os.PathLike, content: str | os.PathLike | None = None,
                   inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """Write the manifest of `artifact` (whose bytes are in `content`, default the artifact itself)."""
    source = Path(content) if content is not None else Path(artifact)
    entry = {"format": MANIFEST_FORMAT, "artifact": Path(artifact).name, "bytes": source.stat().st_size,
             "sha256": sha256_file(source), "inputs": dict(sorted((inputs or {}).items()))}
    with atomic_path(manifest_path(artifact)) as tmp:
        tmp.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return entry


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a file artifact; CorruptArtifactError if it is missing or unreadable."""
    path = manifest_path(artifact)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptArtifactError(artifact, f"has no digest manifest ({path.name} is missing)") from None
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(artifact, f"its manifest {path.name} is unreadable ({exc})") from None
    if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)):
        raise CorruptArtifactError(artifact, f"its manifest {path.name} is malformed")
    return entry


def verify_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Check a file or folder artifact against its digest; return its manifest.

    Raises FileNotFoundError if it is missing and CorruptArtifactError if it does not match.
    """
    path = Path(path)
    if path.is_dir():
        return verify_dir(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: artifact is missing")
    entry = read_manifest(path)
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise CorruptArtifactError(path, f"is {size} bytes, its manifest says {entry['bytes']} (truncated or overwritten)")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise CorruptArtifactError(path, f"sha256 {digest[:12]}... does not match its manifest's {entry['sha256'][:12]}... (corrupted)")
    return entry


def write_dir_manifest(folder: str | os.PathLike, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """Digest every file of a folder artifact into <folder>/vegtts_manifest.json."""
    root = Path(folder)
    files = {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != DIR_MANIFEST}
    entry = {"format": MANIFEST_FORMAT, "files": files, "inputs": dict(sorted((inputs or {}).items()))}
    with atomic_path(root / DIR_MANIFEST) as tmp:
        tmp.write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return entry


def verify_dir(folder: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a folder artifact against its manifest (and that none is missing)."""
    root = Path(folder)
    try:
        entry = json.loads((root / DIR_MANIFEST).read_text(encoding="utf-8"))
        files = entry["files"]
    except FileNotFoundError:
        raise CorruptArtifactError(root, f"has no digest manifest ({DIR_MANIFEST} is missing)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptArtifactError(root, f"its manifest {DIR_MANIFEST} is unreadable ({exc})") from None
    for rel, want in files.items():
        p = root / rel
        if not p.is_file():
            raise CorruptArtifactError(root, f"file {rel} is missing")
        if p.stat().st_size != want["bytes"] or sha256_file(p) != want["sha256"]:
            raise CorruptArtifactError(root, f"file {rel} does not match its manifest (corrupted)")
    return entry


def digest_of(artifact: str | os.PathLike) -> str:
    """The recorded digest of a file artifact (its manifest's sha256; folders: of their manifest)."""
    path = Path(artifact)
    if path.is_dir():
        return sha256_file(path / DIR_MANIFEST)
    return read_manifest(path)["sha256"]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable object (used to name artifact directories)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_fingerprint(*relative_paths: str, exclude: tuple[str, ...] = ()) -> str:
    """Hash of package source files (a file, or every .py/.txt/.html under a folder), leaving out
    the folders in `exclude` (relative to the package)."""
    h = hashlib.sha256()
    skip = tuple(PACKAGE_ROOT / e for e in exclude)
    for rel in sorted(relative_paths):
        p = PACKAGE_ROOT / rel
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if any(f == s or s in f.parents for s in skip):
                continue
            if f.is_file() and f.suffix in {".py", ".txt", ".html", ".yaml"}:
                h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def hardware_fingerprint() -> dict[str, Any]:
    """What the timings depend on: CPU model, core count, OS, and the visible GPUs (if any).

    `VEGTTS_TEST_HARDWARE=<name>` (tests only) replaces the CPU model by "test:<name>", so a test
    can run a job as a node with other hardware would.
    """
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    override = os.environ.get(HARDWARE_OVERRIDE_ENV)
    if override:
        cpu = f"test:{override}"
    out: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
    }
    gpus = gpu_names()
    if gpus:
        out["gpus"] = gpus
    return out


_GPU_NAMES: list[str] | None = None


def gpu_names() -> list[str]:
    """Names and driver of the visible NVIDIA GPUs ("NVIDIA H200 (driver 580.159.04)"), from nvidia-smi
    (no CUDA initialisation); [] where there is none.  Read once per process."""
    global _GPU_NAMES
    if _GPU_NAMES is None:
        import shutil
        import subprocess

        names: list[str] = []
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=30, check=True).stdout
                names = [f"{n.strip()} (driver {d.strip()})" for n, _, d in (row.rpartition(",") for row in out.splitlines() if "," in row)]
            except (OSError, subprocess.SubprocessError):
                names = []
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and names:
            idx = [int(v) for v in visible.split(",") if v.strip().isdigit()]
            names = [names[i] for i in idx if i < len(names)]
        _GPU_NAMES = names
    return list(_GPU_NAMES)


def hardware_key() -> str:
    hw = hardware_fingerprint()
    return short_hash({"cpu": hw["cpu"], "cpus": hw["logical_cpus"], "machine": hw["machine"]}, 8)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("vegtts", "torch", "transformers", "numpy", "pandas", "scipy", "snakemake", "peft"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions, hardware and anything the caller adds (config hash, inputs)."""
    return {"versions": versions(), "hardware": hardware_fingerprint(), **extra}
