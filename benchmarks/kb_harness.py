"""Run ONE candidate through KernelBench's own harness (`eval_kernel_against_ref`), print JSON.

For agreement checks only (benchmarks/bench_gpu.py starts one process per candidate, so a
candidate that ends its process cannot take the others with it).  Needs a local KernelBench
checkout's `src` folder (never committed; pass --kb-src).  KernelBench's package imports its LLM
client libraries at import time; they play no part in evaluation, so empty stand-ins are
registered when they are not installed.

    python benchmarks/kb_harness.py --kb-src third_party/KernelBench/src --ref ref.py \
        --cand cand.py --backend cuda --build-dir DIR --trials 5 --perf-trials 50
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types


def _stand_in(name: str, **attrs: object) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb-src", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--cand", required=True)
    ap.add_argument("--backend", default="cuda", choices=["cuda", "triton"])
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--perf-trials", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, args.kb_src)
    _stand_in("dotenv", load_dotenv=lambda *a, **k: None)
    _stand_in("openai", OpenAI=None)
    _stand_in("litellm", completion=None)
    import torch
    from kernelbench.eval import eval_kernel_against_ref

    result = eval_kernel_against_ref(
        open(args.ref).read(), open(args.cand).read(), seed_num=42, num_correct_trials=args.trials,
        num_perf_trials=args.perf_trials, measure_performance=True, timing_method="cuda_event",
        build_dir=args.build_dir, device=torch.device("cuda:0"), backend=args.backend, precision=torch.float32,
        check_for_excessive_speedup=True,
    )
    out = {
        "compiled": bool(result.compiled), "correctness": bool(result.correctness),
        "runtime_ms": float(result.runtime), "ref_runtime_ms": float(getattr(result, "ref_runtime", -1.0)),
        "metadata": {k: str(v)[:300] for k, v in (result.metadata or {}).items()},
    }
    if out["runtime_ms"] > 0 and out["ref_runtime_ms"] > 0:
        out["speedup"] = out["ref_runtime_ms"] / out["runtime_ms"]
    print("KB_RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
