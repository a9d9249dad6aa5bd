"""Why are short kernels slower under our GPU timing than under KernelBench's?  One process, one GPU.

Times three operations (one fused tanh-GELU kernel, the 8-op reference GELU, a one-element op that
is nothing but overhead) on 8192x4096 fp32 under several timing procedures, interleaved call by
call (so clock and thermal drift hit every procedure alike), and reads the SM clock (NVML) right
after each timed call:

- ours:        upload fresh inputs, idle gap (the parent sending the next round), L2 flush, device
               sync, start event, call, end event, device sync, end event (the evaluator today)
- ours_nogap:  the same without the idle gap
- keepalive:   ours + about --keep-alive-ms of busy GPU work (flush passes) before the flush
- lead50, lead200: ours + a GPU-side wait of 50 or 200 us queued between the sync and the start
               event, so the host's launch of the call overlaps it instead of being timed
- kb:          KernelBench's cuda_event loop: same input every call, no idle gap, sync, 256 MB
               fill (its L2 flush), start event, call, end event, device sync (no sync between
               the flush and the start event)

    python benchmarks/gpu_clock_probe.py --out DIR [--reps 12] [--gap-ms 50]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

PROCEDURES = ("ours", "ours_nogap", "keepalive", "lead50", "lead200", "kb")


def reference_gelu(x: torch.Tensor) -> torch.Tensor:
    cube = x * x * x
    inner = x + 0.044715 * cube
    inner = inner * math.sqrt(2.0 / math.pi)
    return 0.5 * x * (1.0 + torch.tanh(inner))


OPS = {
    "fused_gelu": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "reference_gelu_8ops": reference_gelu,
    "one_element": lambda x: x[:1, :1] + 1.0,
}


def sm_clock_reader(dev: torch.device):
    """A function returning the SM clock in MHz of `dev` (NVML), or None where NVML is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(dev).uuid)
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
        except Exception:  # noqa: BLE001 - older NVML or another uuid format
            handle = pynvml.nvmlDeviceGetHandleByIndex(dev.index or 0)
        return lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
    except Exception as exc:  # noqa: BLE001
        print(f"NVML not usable ({exc}); no clock readings")
        return lambda: None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--gap-ms", type=float, default=50.0)
    ap.add_argument("--keep-alive-ms", type=float, default=10.0)
    args = ap.parse_args()
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    clock = sm_clock_reader(dev)
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or (64 << 20))
    flush = torch.zeros(2 * l2 // 4, dtype=torch.int32, device=dev)
    host_inputs = [torch.randn(8192, 4096) for _ in range(2)]
    same_input = host_inputs[0].to(dev)

    def gpu_ms(work) -> float:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(dev)
        a.record()
        work()
        b.record()
        torch.cuda.synchronize(dev)
        return a.elapsed_time(b)

    for _ in range(50):
        flush.bitwise_not_()
    pass_ms = min(gpu_ms(flush.bitwise_not_) for _ in range(5))
    passes = max(1, math.ceil(args.keep_alive_ms / pass_ms))
    probe_cycles = 200_000
    sleep_ms = min(gpu_ms(lambda: torch.cuda._sleep(probe_cycles)) for _ in range(3))
    lead_cycles = {p: int(probe_cycles * (int(p[4:]) / 1000) / sleep_ms) for p in PROCEDURES if p.startswith("lead")}
    print(f"{torch.cuda.get_device_name(dev)}; flush pass {pass_ms:.4f} ms ({flush.numel() * 4 >> 20} MiB), "
          f"keep-alive {passes} passes; GPU sleep cycles {lead_cycles}")
    for op in OPS.values():  # warm-up: kernels loaded, allocator holding the output size
        op(same_input)
    torch.cuda.synchronize(dev)

    def timed(procedure: str, op, k: int) -> dict:
        if procedure == "kb":
            x = same_input
            for _ in range(3):  # KernelBench's loop is back to back: be in its steady state
                torch.cuda.synchronize(dev)
                torch.empty((32, 1024, 1024), dtype=torch.int64, device=dev).fill_(42)
                op(x)
            torch.cuda.synchronize(dev)
            torch.empty((32, 1024, 1024), dtype=torch.int64, device=dev).fill_(42)
        else:
            x = host_inputs[k % 2].to(dev)  # fresh inputs, uploaded before the clock as in `load`
            torch.cuda.synchronize(dev)
            if procedure != "ours_nogap":
                time.sleep(args.gap_ms / 1000)
            if procedure == "keepalive":
                for _ in range(passes):
                    flush.bitwise_not_()
            flush.bitwise_not_()
            torch.cuda.synchronize(dev)
        start, end, end_full = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        if procedure in lead_cycles:
            torch.cuda._sleep(lead_cycles[procedure])
        start.record()
        op(x)
        end.record()
        torch.cuda.synchronize(dev)
        end_full.record()
        torch.cuda.synchronize(dev)
        mhz = clock()
        return {"stream_ms": start.elapsed_time(end), "full_ms": start.elapsed_time(end_full), "sm_mhz": mhz}

    rows: list[dict] = []
    for rep in range(args.reps):
        for name, op in OPS.items():
            order = PROCEDURES[rep % len(PROCEDURES):] + PROCEDURES[: rep % len(PROCEDURES)]
            for procedure in order:
                rows.append({"rep": rep, "op": name, "procedure": procedure, **timed(procedure, op, rep)})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "clock_probe.json").write_text(json.dumps(rows, indent=1))
    print(f"\nmedians over {args.reps} interleaved calls each (gap {args.gap_ms} ms, keep-alive {args.keep_alive_ms} ms, "
          f"leads 50/200 us); SM clock read by NVML right after the call")
    print(f"{'op':<22} {'procedure':<11} {'stream ms':>10} {'full ms':>9} {'SM MHz':>8}  (min-max stream ms)")
    for name in OPS:
        for procedure in PROCEDURES:
            sel = [r for r in rows if r["op"] == name and r["procedure"] == procedure]
            st = [r["stream_ms"] for r in sel]
            mhz = [r["sm_mhz"] for r in sel if r["sm_mhz"] is not None]
            print(f"{name:<22} {procedure:<11} {statistics.median(st):10.4f} {statistics.median(r['full_ms'] for r in sel):9.4f} "
                  f"{statistics.median(mhz) if mhz else float('nan'):8.0f}  ({min(st):.4f}-{max(st):.4f})")


if __name__ == "__main__":
    main()
