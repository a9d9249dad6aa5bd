"""Sample built-in tasks with the real model under several prompt/temperature settings and
measure what the default experiment needs: sampling time, correct/total per task, and whether
correct samples are faster than the reference.

The check here is deliberately simple (the real evaluator is vegtts.evaluate): each distinct
program runs in a forked child with a timeout; the reference weights are loaded into ModelNew;
outputs are compared on 2 input seeds with the task tolerance; then reference and candidate are
timed interleaved (A B A B ...) on one thread and the ratio of medians is the speedup.

    PYTHONPATH=src python benchmarks/bench_sampling.py --tasks default --k 16 \
        --temperatures 0.3 0.5 0.7 --variants body5 --out benchmarks/results/sampling_runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    # name -> prompt settings
    "body5": {"prompt_format": "body", "n_shots": 5, "prompt_reference": "code"},
    "body3": {"prompt_format": "body", "n_shots": 3, "prompt_reference": "code"},
    "body5full": {"prompt_format": "body", "n_shots": 5, "prompt_reference": "full"},
    "module3": {"prompt_format": "module", "n_shots": 3, "prompt_reference": "code"},
}


def _check_child(source: str, program: str, atol: float, rtol: float, conn: Any) -> None:
    import torch

    from vegtts.tasks.runtime import load_module_from_source, make_inputs, make_model

    torch.set_num_threads(1)
    try:
        ref_mod = load_module_from_source(source, "ref", "<ref>")
        cand_mod = load_module_from_source(program, "cand", "<cand>")
        ref = make_model(ref_mod, 0)
        cand = make_model(cand_mod, 0, "ModelNew")
        cand.load_state_dict(ref.state_dict())
    except Exception as e:  # noqa: BLE001 - any failure of untrusted code is a verdict
        conn.send(("compile_error", 0.0, repr(e)[:200]))
        return
    try:
        with torch.no_grad():
            for seed in (1, 2):
                inputs = make_inputs(ref_mod, seed)
                want = ref(*inputs)
                got = cand(*[x.clone() for x in inputs])
                if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
                    conn.send(("incorrect", 0.0, "type/shape/dtype"))
                    return
                if not torch.allclose(got, want, atol=atol, rtol=rtol):
                    conn.send(("incorrect", 0.0, f"max abs err {float((got - want).abs().max()):.3g}"))
                    return
            inputs = make_inputs(ref_mod, 3)
            ref_t, cand_t = [], []
            for _ in range(2):
                ref(*inputs), cand(*inputs)
            for _ in range(7):
                t0 = time.perf_counter()
                ref(*inputs)
                t1 = time.perf_counter()
                cand(*inputs)
                t2 = time.perf_counter()
                ref_t.append(t1 - t0)
                cand_t.append(t2 - t1)
        conn.send(("ok", statistics.median(ref_t) / statistics.median(cand_t), ""))
    except Exception as e:  # noqa: BLE001
        conn.send(("runtime_error", 0.0, repr(e)[:200]))


def check_program(spec: Any, program: str, timeout: float = 30.0) -> tuple[str, float, str]:
    if not program:
        return "no_code", 0.0, ""
    try:
        compile(program, "<cand>", "exec")
    except SyntaxError as e:
        return "syntax_error", 0.0, str(e)[:200]
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_check_child, args=(spec.source, program, spec.atol, spec.rtol, child))
    p.start()
    child.close()
    if parent.poll(timeout):
        result = parent.recv()
    else:
        result = ("timeout", 0.0, "")
    p.kill()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resources/gemma3-270m-hf-tmp")
    ap.add_argument("--tasks", nargs="+", default=["default"], help="task ids, 'default' or 'all'")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.5])
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--variants", nargs="+", default=["body5"], choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast-threshold", type=float, default=1.2, help="speedup counted as faster")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling_runs.jsonl"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from vegtts.models import load_model_and_tokenizer
    from vegtts.sampling.prompts import build_prompt
    from vegtts.sampling.transformers_backend import SamplerSettings, sample_task
    from vegtts.tasks import DEFAULT_TASK_IDS, load_tasks

    ids: Any = DEFAULT_TASK_IDS if args.tasks == ["default"] else ("all" if args.tasks == ["all"] else args.tasks)
    specs = load_tasks({"suite": "builtin", "ids": ids})
    model, tok = load_model_and_tokenizer(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        for temp in args.temperatures:
            settings = SamplerSettings(
                k=args.k, temperature=temp, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size, seed=args.seed, **VARIANTS[variant],
            )
            tot_sample_s, tot_correct, tot_n, mixed, fast_mixed = 0.0, 0, 0, 0, 0
            print(f"\n=== variant={variant} T={temp} K={args.k} max_new={args.max_new_tokens}")
            for spec in specs:
                prompt = build_prompt(spec, settings.prompt_format, settings.prompt_style, settings.n_shots,
                                      tok, reference=settings.prompt_reference)
                t0 = time.perf_counter()
                recs = sample_task(model, tok, spec, prompt, settings)
                sample_s = time.perf_counter() - t0
                verdicts: dict[str, tuple[str, float, str]] = {}
                for r in recs:
                    if r.code_sha256 not in verdicts:
                        verdicts[r.code_sha256] = check_program(spec, r.program)
                rows = [verdicts[r.code_sha256] for r in recs]
                n_ok = sum(v[0] == "ok" for v in rows)
                n_fast = sum(v[0] == "ok" and v[1] > args.fast_threshold for v in rows)
                statuses: dict[str, int] = {}
                for v in rows:
                    statuses[v[0]] = statuses.get(v[0], 0) + 1
                distinct_ok = sorted({(r.code.strip(), round(verdicts[r.code_sha256][1], 2)) for r in recs
                                      if verdicts[r.code_sha256][0] == "ok"})
                tot_sample_s += sample_s
                tot_correct += n_ok
                tot_n += len(recs)
                mixed += 0 < n_ok < len(recs)
                fast_mixed += 0 < n_fast < n_ok
                n_tok = sum(r.n_tokens for r in recs)
                print(f"{spec.task_id:20s} ok {n_ok:2d}/{len(recs)} fast {n_fast:2d} "
                      f"sample {sample_s:5.1f}s tokens {n_tok:4d} {statuses}")
                for code, sp in distinct_ok[:4]:
                    print(f"      {sp:5.2f}x  {code[:90]!r}")
                with args.out.open("a") as f:
                    f.write(json.dumps({
                        "variant": variant, "temperature": temp, "k": args.k, "max_new_tokens": args.max_new_tokens,
                        "top_p": args.top_p, "task_id": spec.task_id, "n_ok": n_ok, "n": len(recs),
                        "n_fast": n_fast, "sample_s": sample_s, "n_tokens": n_tok, "statuses": statuses,
                        "prompt_sha": recs[0].prompt_sha, "ok_codes": distinct_ok[:6],
                    }) + "\n")
            print(f"TOTAL variant={variant} T={temp}: correct {tot_correct}/{tot_n} = {tot_correct / tot_n:.0%}, "
                  f"mixed tasks {mixed}, tasks with fast and non-fast correct {fast_mixed}, "
                  f"sampling {tot_sample_s:.0f}s")


if __name__ == "__main__":
    main()
