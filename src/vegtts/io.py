"""Atomic writes, content hashes and provenance.

A killed job never leaves a half-written artifact: everything is written to a temporary file
in the target directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PACKAGE_ROOT = Path(__file__).resolve().parent


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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the artifact the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_process_umask())
        os.replace(tmp_path, target)
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


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | os.PathLike, df: "Any", metadata: dict[str, Any] | None = None) -> None:
    """Write a DataFrame atomically; `metadata` is stored as JSON in the parquet footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"vegtts"] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"vegtts")
    return json.loads(raw) if raw else {}


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


def code_fingerprint(*relative_paths: str) -> str:
    """Hash of package source files (a file, or every .py/.txt/.html under a folder)."""
    h = hashlib.sha256()
    for rel in sorted(relative_paths):
        p = PACKAGE_ROOT / rel
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and f.suffix in {".py", ".txt", ".html", ".yaml"}:
                h.update(str(f.relative_to(PACKAGE_ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


def hardware_fingerprint() -> dict[str, Any]:
    """What the timings depend on: CPU model, core count, OS, and the visible GPUs (if any)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
                names = [f"{n.strip()} (driver {d.strip()})" for n, _, d in (l.rpartition(",") for l in out.splitlines() if "," in l)]
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
