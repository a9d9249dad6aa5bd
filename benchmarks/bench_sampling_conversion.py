"""Time to turn one server answer into a SampleRecord, against the completion's length.

A remote backend's answer (here an OpenAI `/v1/completions` choice: text, token texts, log-probs)
goes through the same path as in `vegtts sample`: parse the choice, check it, apply the stop strings,
map token texts to ids with the local tokenizer, extract the code, find its token span, build the
record. The completion is Python code of 12.5, 25, 50 and 100 KB (the sizes of issue #14), tokenized
by the default model's tokenizer; finish_reason "length" (the slow case: extraction trims a body that
does not parse). A conversion linear in the length doubles its time per doubling of the size: the
printed ratio of consecutive sizes is ~2 for linear work and ~4 for quadratic work.

    PYTHONPATH=src python benchmarks/bench_sampling_conversion.py --model resources/models/gemma3-270m-gguf
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def completion_text(n_bytes: int) -> str:
    """Python-like lines (a body that keeps going, some non-ASCII in comments) of about n_bytes."""
    lines, size, i = [], 0, 0
    while size < n_bytes:
        line = f"    y{i} = torch.relu(x * {i % 7 + 1}.5) + y{max(i - 1, 0)}  # step {i} \u2192 ok\n"
        lines.append(line)
        size += len(line.encode())
        i += 1
    return "".join(lines)


def answer_for(text: str, tokenizer) -> dict:
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    return {"index": 0, "text": text, "finish_reason": "length",
            "logprobs": {"tokens": pieces, "token_logprobs": [-0.5] * len(pieces)}}, len(ids)


def convert(choice: dict, n_tokens: int, tokenizer, spec) -> object:
    from vegtts.sampling.conversion import generation_from_completion_choice, to_raw_sample
    from vegtts.sampling.transformers_backend import SamplerSettings, _to_record

    s = SamplerSettings(k=1, max_new_tokens=n_tokens)
    gen = generation_from_completion_choice(choice)
    raw = to_raw_sample(gen, s.stops(), tokenizer, max_new_tokens=s.max_new_tokens)
    return _to_record(raw, 0, spec, s, 0, "base", "sha", 10, "bench", tokenizer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "resources" / "models" / "gemma3-270m-gguf"))
    ap.add_argument("--sizes-kb", default="12.5,25,50,100")
    ap.add_argument("--out", default="", help="write the numbers as JSON here")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    from vegtts.tasks import load_tasks

    tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    spec = load_tasks({"suite": "builtin", "ids": ["relu"]})[0]
    rows = []
    for kb in [float(x) for x in args.sizes_kb.split(",")]:
        choice, n_tokens = answer_for(completion_text(int(kb * 1000)), tokenizer)
        t0 = time.perf_counter()
        rec = convert(choice, n_tokens, tokenizer, spec)
        seconds = time.perf_counter() - t0
        rows.append({"kb": kb, "tokens": n_tokens, "seconds": round(seconds, 3), "extract_status": rec.extract_status})
        ratio = f"  x{seconds / rows[-2]['seconds']:.2f} vs {rows[-2]['kb']} KB" if len(rows) > 1 and rows[-2]["seconds"] > 0 else ""
        print(f"{kb:6.1f} KB  {n_tokens:6d} tokens  {seconds:8.3f} s  ({rec.extract_status}){ratio}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
