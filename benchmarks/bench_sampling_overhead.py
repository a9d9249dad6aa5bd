"""Overhead of vegtts's sampling stage over a bare `model.generate()` of the same backend.

Both sides use the same loaded model (transformers on CPU), the same prompts, the same seeds and
produce the same tokens: the vegtts side runs with no stop strings and `drop_finished=False`, so it
decodes exactly what `generate()` decodes (checked and printed: rows with identical tokens).  The
vegtts side is the whole stage for one task as the CLI runs it, minus model loading: prompt, decode
loop, extraction, code-span mapping, records and the parquet write.  Runs alternate A B A B per task
so machine drift hits both; the ratio is total vegtts time / total generate time over all runs.

A second figure compares vegtts with its default stop handling (rows leave the batch as soon as
they stop) against `generate()` given the same stop strings (`stop_strings=`), the realistic case.

    PYTHONPATH=src python benchmarks/bench_sampling_overhead.py --tasks 2 --k 4 --max-new-tokens 32 \
        --reps 2 --out benchmarks/results/sampling_overhead.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def bare_generate(model: Any, tok: Any, prompt_ids: Any, n: int, temperature: float, max_new: int, seed: int, stops: list[str] | None) -> list[list[int]]:
    import torch

    from vegtts.sampling.transformers_backend import _eos_ids

    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if stops:
        kwargs = {"stop_strings": stops, "tokenizer": tok}
    with torch.inference_mode():
        out = model.generate(
            prompt_ids.expand(n, -1), do_sample=True, temperature=temperature, top_p=1.0, top_k=None,
            max_new_tokens=max_new, **kwargs,
        )
    eos = _eos_ids(model, tok)
    rows = []
    for row in out[:, prompt_ids.shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=4, help="first N tasks of the builtin default mix")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=["same_tokens", "with_stops"], choices=["same_tokens", "with_stops"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd
    import torch

    from vegtts.io import provenance
    from vegtts.models import load_model_and_tokenizer, prepare_default_model
    from vegtts.sampling.prompts import build_prompt, stop_sequences
    from vegtts.sampling.transformers_backend import batch_seed, encode_prompt, run_sampling
    from vegtts.tasks import read_tasks_json, resolve_tasks_to_json

    torch.set_num_threads(args.threads)
    model_dir = prepare_default_model(REPO / "resources" / "models" / "gemma3-270m-gguf")
    model, tok = load_model_and_tokenizer(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix="vegtts-bench-"))
    tasks_json = tmp / "tasks.json"
    resolve_tasks_to_json({"suite": "builtin", "ids": "default"}, tasks_json, validate=False)
    specs = read_tasks_json(tasks_json)
    task_ids = list(specs)[: args.tasks]
    base = {"k": args.k, "temperature": args.temperature, "top_p": 1.0, "max_new_tokens": args.max_new_tokens,
            "batch_size": args.k, "seed": 0, "n_shots": 5}
    cases = {
        "same_tokens": ({**base, "stop": [], "drop_finished": False}, None),
        "with_stops": ({**base}, stop_sequences("body")),
    }
    results: dict[str, Any] = {}
    for case in args.cases:
        settings, gen_stops = cases[case]
        t_vegtts: list[float] = []
        t_generate: list[float] = []
        rows_equal = rows_total = tokens = 0
        # one untimed warm-up of each side
        run_sampling(tasks_json, task_ids[0], settings, model_dir, tmp / "warm.parquet", model_and_tokenizer=(model, tok))
        for rep in range(args.reps):
            for task in task_ids:
                prompt = build_prompt(specs[task], "body", "completion", 5, tok)
                prompt_ids = encode_prompt(tok, prompt)
                seed = batch_seed(0, task, 0)
                order = ("v", "g") if rep % 2 == 0 else ("g", "v")
                for side in order:
                    t0 = time.perf_counter()
                    if side == "v":
                        out = tmp / f"{case}-{task}.parquet"
                        run_sampling(tasks_json, task, settings, model_dir, out, model_and_tokenizer=(model, tok))
                        t_vegtts.append(time.perf_counter() - t0)
                    else:
                        gen_rows = bare_generate(model, tok, prompt_ids, args.k, args.temperature, args.max_new_tokens, seed, gen_stops)
                        t_generate.append(time.perf_counter() - t0)
                ours = pd.read_parquet(out)["token_ids"].map(list).tolist()
                rows_total += len(ours)
                rows_equal += sum(a == b for a, b in zip(ours, gen_rows))
                tokens += sum(len(r) for r in ours)
        ratio = sum(t_vegtts) / sum(t_generate)
        results[case] = {
            "vegtts_s": round(sum(t_vegtts), 3),
            "generate_s": round(sum(t_generate), 3),
            "overhead_ratio": round(ratio, 4),
            "median_per_task_ratio": round(statistics.median(v / g for v, g in zip(t_vegtts, t_generate)), 4),
            "rows_with_identical_tokens": f"{rows_equal}/{rows_total}",
            "vegtts_tokens": tokens,
        }
        print(f"{case}: vegtts {sum(t_vegtts):.2f} s, generate {sum(t_generate):.2f} s, "
              f"overhead ratio {ratio:.3f} (target < 1.10); identical token rows {rows_equal}/{rows_total}", flush=True)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "tasks": task_ids, "results": results, "provenance": provenance()}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
