"""Sampling (transformers), teacher-forced scoring and one TTT step through vegtts's own functions, on CUDA
and on the CPU of the same machine, with their times.

The model is built from a config with random weights (the default model's architecture, Gemma 3
270M, from its config.json, and its tokenizer): the point is the code path on CUDA, not the
samples' quality.  Per device: `run_sampling` (K samples of one builtin task, batched, with the
prompt's KV cache shared), `run_scoring` of those samples, then `make_lora_model` + one `ttt_step`
on them with synthetic rewards.  vLLM is run too where it is installed.

    PYTHONPATH=src python benchmarks/gpu_model_stages.py --model-dir DIR_WITH_config.json_AND_tokenizer --out DIR \
        [--devices cuda,cpu] [--k 16] [--max-new-tokens 64] [--task relu_thrice]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build_model(model_dir: Path, out_dir: Path, seed: int) -> Path:
    """A Hugging Face folder with the config and tokenizer of `model_dir` and random weights (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    for f in model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, out_dir / f.name)
    return out_dir


def stages(device: str, model_path: Path, tasks_json: Path, task: str, out: Path, k: int, max_new: int) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from vegtts.models import load_model_and_tokenizer
    from vegtts.sampling.transformers_backend import run_sampling
    from vegtts.scoring import run_scoring
    from vegtts.ttt import make_lora_model, ttt_step

    res: dict = {"device": device}
    t0 = time.perf_counter()
    model, tok = load_model_and_tokenizer(model_path, device=device)
    sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    sync()
    res["load_s"] = time.perf_counter() - t0
    settings = {"k": k, "temperature": 1.0, "max_new_tokens": max_new, "batch_size": 8, "seed": 0}
    samples_path = out / f"samples_{device}.parquet"
    t0 = time.perf_counter()
    run_sampling(tasks_json, task, settings, model_path, samples_path, model_and_tokenizer=(model, tok))
    sync()
    res["sample_s"] = time.perf_counter() - t0
    samples = pd.read_parquet(samples_path)
    res["samples"], res["sampled_tokens"] = len(samples), int(samples["n_tokens"].sum())
    t0 = time.perf_counter()
    run_scoring(samples_path, model_path, None, "base", out / f"scores_{device}.parquet", model_and_tokenizer=(model, tok))
    sync()
    res["score_s"] = time.perf_counter() - t0
    scores = pd.read_parquet(out / f"scores_{device}.parquet")
    # teacher forcing reproduces the sampler's own log-probs (same model, same tokens)
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(samples["token_logprobs"], scores["token_logprobs"]) if len(a)]
    res["score_vs_sample_max_abs_logprob_diff"] = max(diffs) if diffs else 0.0
    from vegtts.io import read_parquet_metadata

    prompt = read_parquet_metadata(samples_path)["prompt"]
    rng = np.random.default_rng(0)
    ev = samples[["task_id", "policy", "seed", "sample_idx"]].copy()
    ev["correct"] = rng.random(len(ev)) < 0.6
    ev["speedup"] = np.where(ev["correct"], rng.lognormal(0.0, 0.3, len(ev)), 0.0)
    lora = make_lora_model(model, rank=16, alpha=32.0, seed=0)
    before = {n: p.detach().clone() for n, p in lora.named_parameters() if p.requires_grad}
    t0 = time.perf_counter()
    stats = ttt_step(lora, tok, {task: prompt}, samples, ev, {"learning_rate": 1e-4, "micro_batch": 4}, progress=False)
    sync()
    res["ttt_step_s"] = time.perf_counter() - t0
    changed = sum(int(not torch.equal(before[n], p.detach())) for n, p in lora.named_parameters() if p.requires_grad)
    res.update({"ttt_loss": stats["loss"], "ttt_grad_norm": stats["grad_norm"], "ttt_train_tokens": stats["n_train_tokens"],
                "lora_tensors_changed": changed, "lora_tensors": len(before)})
    if device == "cuda":
        res["cuda_peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del lora, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True, help="folder with config.json and the tokenizer files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--task", default="relu_thrice")
    args = ap.parse_args()
    import torch
    import transformers

    from vegtts.tasks import resolve_tasks_to_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = build_model(Path(args.model_dir), out / "random_model", seed=0)
    tasks_json = out / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": [args.task]}, tasks_json, validate=False)
    torch.set_num_threads(min(16, torch.get_num_threads()))
    results = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "threads": torch.get_num_threads(),
               "model": "Gemma3ForCausalLM from the default model's config.json, random weights (seed 0), float32", "runs": []}
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            print("no CUDA device: skipping cuda", flush=True)
            continue
        r = stages(device, model_path, tasks_json, args.task, out, args.k, args.max_new_tokens)
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
    try:
        import vllm  # noqa: F401

        results["vllm"] = "installed; not run by this script"
    except ImportError:
        results["vllm"] = "not installed on this machine: not run"
    (out / "model_stages.json").write_text(json.dumps(results, indent=1))
    print(f"\nmodel: {results['model']}; torch {results['torch']}, transformers {results['transformers']}, GPU {results['gpu']}")
    print(f"{'device':<6} {'load s':>7} {'sample s':>9} {'samples':>8} {'tokens':>7} {'score s':>8} {'TTT step s':>10} {'|lp diff|':>9} {'LoRA changed':>12}")
    for r in results["runs"]:
        print(f"{r['device']:<6} {r['load_s']:7.2f} {r['sample_s']:9.2f} {r['samples']:8d} {r['sampled_tokens']:7d} {r['score_s']:8.2f} "
              f"{r['ttt_step_s']:10.2f} {r['score_vs_sample_max_abs_logprob_diff']:9.2e} {r['lora_tensors_changed']:>5}/{r['lora_tensors']}")
    print(f"vLLM: {results['vllm']}")


if __name__ == "__main__":
    main()
