"""Multi-GPU evidence from saved bench_gpu.py records: per phase, timed rounds per physical GPU, rounds
overlapping on one GPU (must be 0), and how long both GPUs were inside candidates' timing phases at once.

    python benchmarks/gpu_windows_report.py benchmarks/results/gpu_h200_run4_ours.json [...]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).with_name("bench_gpu.py"))
bench_gpu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench_gpu)  # type: ignore[union-attr]


def phases(saved: dict) -> dict[str, list[dict]]:
    out = {"main": list(saved.get("main", {}).values())}
    for name, recs in saved.get("procedures", {}).items():
        out[f"procedure {name}"] = list(recs.values())
    for n, t in saved.get("throughput", {}).items():
        out[f"throughput {n} GPU(s)"] = list(t["records"].values())
    return {k: v for k, v in out.items() if v}


def main() -> None:
    for path in sys.argv[1:]:
        print(path)
        for name, details in phases(json.loads(Path(path).read_text())).items():
            chk = bench_gpu.check_windows(details)
            print(f"  {name:<22} timed rounds per GPU {sorted(chk['gpus'].values(), reverse=True)}; overlapping on one GPU: "
                  f"{chk['same_gpu_overlaps']}; seconds in timing phases per GPU {sorted(chk['timing_phase_s'].values(), reverse=True)}, "
                  f"both GPUs at once {chk['both_in_timing_phase_s']}")


if __name__ == "__main__":
    main()
