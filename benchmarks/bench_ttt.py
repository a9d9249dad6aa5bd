"""Memory peak and time of one TTT step and of scoring, memory-saving path vs naive path, one run.

Memory-saving path (vegtts.scoring / vegtts.ttt): the prompt runs once per task and its KV
cache is shared; only completion tokens run through the decoder; logits only at completion
positions, in chunks (checkpointed under autograd).  Naive path: every sample's whole sequence
(prompt + completion) through the full model, full [batch, seq, vocab] logits, log_softmax
everywhere (and, for TTT, autograd through all of it).

The naive path needs ~1.4 GB of logits per 700-token sequence (x2-3 with log_softmax and the
backward), so it is CAPPED: it runs on the first `--naive-score-samples` / `--naive-ttt-samples`
samples in micro-batches of `--naive-micro-batch`, and its time for the full count is
extrapolated linearly (its peak memory is per micro-batch, so it does not grow with the count).
Both paths are also checked against each other on the capped samples (log-probs and gradients).

Peak memory: the process's resident high-water mark (VmHWM), reset before each phase
(/proc/self/clear_refs), minus the RSS at the start of the phase.  Completions are synthetic:
random ~40-token slices of the prompt's own tokens (time and memory do not depend on content).

    PYTHONPATH=src python benchmarks/bench_ttt.py --out benchmarks/results/ttt_cpu.txt
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "resources" / "models" / "gemma3-270m-gguf"


def synthetic_samples(tokenizer: Any, prompt: str, task_id: str, n: int, mean_len: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    from vegtts.sampling.prompts import prompt_sha
    from vegtts.sampling.transformers_backend import encode_prompt

    ids = encode_prompt(tokenizer, prompt)[0].tolist()
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(mean_len - 8, mean_len + 9))
        start = int(rng.integers(1, len(ids) - length))
        rows.append(ids[start : start + length])
    return pd.DataFrame(
        {
            "task_id": task_id, "policy": "base", "seed": 0, "sample_idx": range(n), "prompt_sha": prompt_sha(prompt),
            "token_ids": rows, "code_token_start": 0, "code_token_end": [len(r) for r in rows],
            "n_prompt_tokens": len(ids),
        }
    )


def synthetic_evaluations(samples: Any, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    ev = samples[["task_id", "policy", "seed", "sample_idx"]].copy()
    ev["correct"] = rng.random(len(ev)) < 0.6
    ev["speedup"] = np.where(ev["correct"], rng.lognormal(0.0, 0.3, len(ev)), 0.0)
    return ev


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so each phase starts from the same RSS."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed(fn: Any) -> tuple[Any, float, Any]:
    from vegtts.peak_memory import measure_peak_rss

    release_freed_memory()
    with measure_peak_rss() as mem:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, seconds, mem


def naive_scoring(model: Any, prompt_ids: Any, rows: list[list[int]], micro_batch: int) -> list[list[float]]:
    import torch

    from vegtts.scoring import naive_completion_logprobs

    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), micro_batch):
            lp, mask = naive_completion_logprobs(model, prompt_ids, rows[s : s + micro_batch])
            out += [lp[i][mask[i]].tolist() for i in range(len(lp))]
    return out


def naive_ttt_grads(model: Any, prompt_ids: Any, rows: list[list[int]], adv: Any, micro_batch: int) -> dict[str, Any]:
    from vegtts.scoring import causal_lm, naive_completion_logprobs
    from vegtts.ttt_objectives import policy_gradient_loss

    n_tokens = sum(len(r) for r in rows)
    model.zero_grad(set_to_none=True)
    causal_lm(model).train()
    for s in range(0, len(rows), micro_batch):
        lp, mask = naive_completion_logprobs(model, prompt_ids, rows[s : s + micro_batch])
        policy_gradient_loss(lp, adv[s : s + micro_batch], mask, normalizer=n_tokens).backward()
    causal_lm(model).eval()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def efficient_ttt_grads(model: Any, tokenizer: Any, prompt: str, samples: Any, ev: Any, settings: dict) -> tuple[dict, dict]:
    """ttt_step with SGD(lr=1) gives the gradient as the parameter change; parameters restored."""
    import torch

    from vegtts.ttt import lora_parameters, ttt_step

    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    stats = ttt_step(model, tokenizer, {samples["task_id"].iloc[0]: prompt}, samples, ev, settings,
                     optimizer=torch.optim.SGD(lora_parameters(model), lr=1.0), progress=False)
    grads = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                grads[n] = before[n] - p.detach()
                p.copy_(before[n])
    return grads, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--task", default="relu_where")
    ap.add_argument("--n-shots", type=int, default=5)
    ap.add_argument("--score-samples", type=int, default=64)
    ap.add_argument("--ttt-samples", type=int, default=16)
    ap.add_argument("--completion-tokens", type=int, default=40)
    ap.add_argument("--micro-batch", type=int, default=8, help="memory-saving scoring micro-batch")
    ap.add_argument("--ttt-micro-batch", type=int, default=4)
    ap.add_argument("--naive-micro-batch", type=int, default=2)
    ap.add_argument("--naive-score-samples", type=int, default=4)
    ap.add_argument("--naive-ttt-samples", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs of every phase, order alternated; min time, max memory reported")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import numpy as np
    import torch

    from vegtts.models import load_model_and_tokenizer
    from vegtts.sampling.prompts import build_prompt
    from vegtts.sampling.transformers_backend import encode_prompt
    from vegtts.scoring import score_samples
    from vegtts.tasks import load_tasks
    from vegtts.ttt import TTTSettings, compute_advantages, join_evaluations, make_lora_model
    from vegtts.ttt_objectives import evaluation_order

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model_and_tokenizer(args.model)
    spec = load_tasks({"suite": "builtin", "ids": [args.task]})[0]
    prompt = build_prompt(spec, "body", "completion", args.n_shots)
    prompt_ids = encode_prompt(tok, prompt)
    with torch.inference_mode():  # page the (memory-mapped) weights in before anything is measured
        model(input_ids=prompt_ids[:, :64], logits_to_keep=1)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"# bench_ttt  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"command: PYTHONPATH=src python benchmarks/bench_ttt.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    say(f"machine: {platform.machine()} {platform.processor() or ''}, torch threads {torch.get_num_threads()}, torch {torch.__version__}"
        " (shared machine: other jobs ran concurrently, times are noisy)")
    say(f"model: {args.model}; prompt: task {args.task}, {args.n_shots}-shot body prompt, {prompt_ids.shape[1]} tokens; "
        f"synthetic completions of {args.completion_tokens}+-8 tokens")
    say()
    header = f"{'phase':44s} {'samples':>7s} {'mbatch':>6s} {'time s':>8s} {'s/sample':>8s} {'time@full s':>11s} {'peak MiB':>9s} {'+MiB':>8s}"
    say(header)
    results: dict[str, tuple[float, float]] = {}

    def row(name: str, n: int, mb: int, seconds: float, mem: Any, full: int) -> None:
        results[name] = (seconds / n * full, mem.delta_mb)
        say(f"{name:44s} {n:7d} {mb:6d} {seconds:8.1f} {seconds / n:8.2f} {seconds / n * full:11.1f} {mem.peak_mb:9.0f} {mem.delta_mb:8.0f}")

    # ---- inputs
    score_df = synthetic_samples(tok, prompt, args.task, args.score_samples, args.completion_tokens, seed=1)
    n_naive = min(args.naive_score_samples, args.score_samples)
    naive_rows = [list(r) for r in score_df["token_ids"][:n_naive]]
    lora = make_lora_model(model, rank=16, alpha=32, seed=0)
    with torch.no_grad():  # a trained adapter (B != 0), so every LoRA weight has a gradient
        gen = torch.Generator().manual_seed(0)
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 1e-3)
    ttt_df = synthetic_samples(tok, prompt, args.task, args.ttt_samples, args.completion_tokens, seed=2)
    ev = synthetic_evaluations(ttt_df, seed=3)
    settings = {"micro_batch": args.ttt_micro_batch, "learning_rate": 1e-5}
    n_naive_t = min(args.naive_ttt_samples, args.ttt_samples)
    small, small_ev = ttt_df.iloc[:n_naive_t].copy(), ev.iloc[:n_naive_t].copy()
    batch = evaluation_order(join_evaluations(small, small_ev)).reset_index(drop=True)
    _, adv, _ = compute_advantages(batch, "paper", None, TTTSettings())
    rows_t = [list(r) for r in batch["token_ids"]]

    # ---- phases: (name, samples run, micro-batch, full count, function); with the scorer the
    # base model is scored (adapter disabled), as for the probe's step-0 scores
    def score_base() -> Any:
        with lora.disable_adapter():
            return score_samples(lora, tok, prompt, score_df, micro_batch=args.micro_batch)

    def naive_score_base() -> Any:
        with lora.disable_adapter():
            return naive_scoring(lora, prompt_ids, naive_rows, args.naive_micro_batch)

    phases = [
        ("score: memory-saving (prompt cache, chunks)", len(score_df), args.micro_batch, args.score_samples, score_base),
        ("score: naive (full logits) [capped]", n_naive, args.naive_micro_batch, args.score_samples, naive_score_base),
        ("ttt step: memory-saving, exact prompt grad", len(ttt_df), args.ttt_micro_batch, args.ttt_samples,
         lambda: efficient_ttt_grads(lora, tok, prompt, ttt_df, ev, settings)),
        ("ttt step: memory-saving, detached prompt", len(ttt_df), args.ttt_micro_batch, args.ttt_samples,
         lambda: efficient_ttt_grads(lora, tok, prompt, ttt_df, ev, {**settings, "detach_prompt": True})),
        ("ttt step: naive (full logits) [capped]", n_naive_t, args.naive_micro_batch, args.ttt_samples,
         lambda: naive_ttt_grads(lora, prompt_ids, rows_t, adv, args.naive_micro_batch)),
    ]
    times: dict[str, list[float]] = {name: [] for name, *_ in phases}
    mems: dict[str, list[Any]] = {name: [] for name, *_ in phases}
    outputs: dict[str, Any] = {}
    for rep in range(args.repeats):  # alternate the order, so drift on the shared machine hits both paths
        for name, _, _, _, fn in (phases if rep % 2 == 0 else phases[::-1]):
            outputs[name], sec, mem = timed(fn)
            times[name].append(sec)
            mems[name].append(mem)
    for name, n, mb, full, _ in phases:
        mem = max(mems[name], key=lambda m: m.delta_mb)
        row(name, n, mb, min(times[name]), mem, full)
        say(f"    times of the {args.repeats} runs: {', '.join(f'{t:.1f}' for t in times[name])} s")
    scored = outputs[phases[0][0]]
    naive_lp = outputs[phases[1][0]]
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(naive_lp, scored["token_logprobs"][:n_naive]))
    stats = outputs[phases[2][0]][1]
    want = outputs[phases[4][0]]
    got, _ = efficient_ttt_grads(lora, tok, prompt, small, small_ev, settings)
    gdiff = max(float((got[n] - want[n]).abs().max()) for n in want)
    gscale = max(float(want[n].abs().max()) for n in want)

    say()
    for what in ("score", "ttt step"):
        eff = [v for k, v in results.items() if k.startswith(what) and "memory-saving" in k][0]
        nai = [v for k, v in results.items() if k.startswith(what) and "naive" in k][0]
        say(f"{what}: naive / memory-saving: time {nai[0] / eff[0]:.1f}x, peak memory increase {nai[1] / max(eff[1], 1.0):.1f}x")
    say(f"agreement on the capped samples: max |log-prob diff| {diff:.2e}; max |grad diff| {gdiff:.2e} (max |grad| {gscale:.2e})")
    say(f"ttt step (memory-saving, exact): {stats['n_train_tokens']} training tokens, {stats['n_prompt_tokens']} prompt tokens, "
        f"loss {stats['loss']:.4g}, grad norm {stats['grad_norm']:.3g}")
    say("time s: the fastest of the repeats (least disturbed by other jobs); peak/+MiB: the largest. time@full: for the capped naive rows, s/sample x the full count (its peak is per micro-batch).")
    say("+MiB: peak RSS during the phase minus RSS at its start (after gc + malloc_trim; model weights already resident).")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
