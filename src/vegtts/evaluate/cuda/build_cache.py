"""Build cache for GPU candidates, keyed by a hash of the candidate source.

`torch.utils.cpp_extension.load_inline` builds under ``$TORCH_EXTENSIONS_DIR/<name>`` and skips
the compiler when the sources hash to what it built before; Triton keeps compiled kernels under
``$TRITON_CACHE_DIR``.  Giving every distinct source its own folder (name = `source_key`) means:
the same source evaluated again (another sample with identical code, a re-run, the excessive-
speedup re-time) reuses the build; two different sources never share a folder, so one cannot
poison or lock another's build (KernelBench's stale-lock hangs), and a candidate's folder can be
dropped on its own.  The key includes the toolchain (torch and CUDA versions, GPU architecture
list), so a changed compiler rebuilds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KEY_CHARS = 24


def source_key(source: str, toolchain: str = "") -> str:
    """Hex key of (source, toolchain); the folder name of this source's build."""
    h = hashlib.sha256()
    h.update(toolchain.encode())
    h.update(b"\0")
    h.update(source.encode())
    return h.hexdigest()[:KEY_CHARS]


def build_dir_for(cache_root: str | Path, source: str, toolchain: str = "") -> Path:
    return Path(cache_root) / source_key(source, toolchain)


def build_env(build_dir: Path) -> dict[str, str]:
    """Environment of a worker that compiles into `build_dir` (created, world-writable parent untouched)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "triton").mkdir(exist_ok=True)
    return {
        "TORCH_EXTENSIONS_DIR": str(build_dir / "torch_extensions"),
        "TRITON_CACHE_DIR": str(build_dir / "triton"),
    }


def is_warm(build_dir: Path) -> bool:
    """Whether anything was built into `build_dir` before (an extension library or a Triton kernel)."""
    if not build_dir.is_dir():
        return False
    for _root, _dirs, files in os.walk(build_dir):
        if any(f.endswith((".so", ".cubin")) for f in files):
            return True
    return False
