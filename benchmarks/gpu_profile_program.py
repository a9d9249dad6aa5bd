"""The profiler's yardstick for programs on one GPU: CUPTI kernel durations per call (torch.profiler).

Runs the program (a task's reference, or a candidate assembled with its task) the way the evaluator
times it, outside the evaluator: inputs made on the GPU from a fresh seed for every call, the L2
flushed (a 2x-L2 buffer rewritten), the device synchronised, then the call alone under
torch.profiler (CUDA activity, i.e. CUPTI), synchronised again.  The call's time is the sum of the
durations of the GPU activities the profiler recorded (kernels, memsets, copies); the script prints
the median over --calls calls (after --warmup untimed calls) as one JSON line.

    python benchmarks/gpu_profile_program.py --jobs jobs.json [--calls 20] [--warmup 3]

jobs.json: a list of {label, task, program (a file with the full program), class_name, build_dir,
suite}; one JSON line per job on stdout.  One process per GPU runs its jobs one after another.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Triton looks its kernels' module up by name
    spec.loader.exec_module(module)
    return module


def profile_one(job: dict, calls: int, warmup: int) -> dict:
    """Median CUPTI time per call of one job {task, program (file), class_name, build_dir, suite}."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from vegtts.evaluate.task import derive_seed
    from vegtts.tasks import load_tasks, make_init_inputs

    if job.get("build_dir"):
        from vegtts.evaluate.cuda.build_cache import build_env

        os.environ.update(build_env(Path(job["build_dir"])))
    (spec,) = load_tasks({**job.get("suite", {"suite": "builtin_gpu"}), "ids": [job["task"]]})
    tag = f"{os.getpid()}_{abs(hash(job['program'])) % 10**8}"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"vegtts-prof-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    (work / f"vegtts_reference_{tag}.py").write_text(spec.source)
    ref_mod = load(work / f"vegtts_reference_{tag}.py", f"vegtts_reference_{tag}")
    prog_path = work / f"vegtts_candidate_{tag}.py"
    prog_path.write_text(Path(job["program"]).read_text())
    prog_mod = load(prog_path, f"vegtts_candidate_{tag}")
    dev = torch.device("cuda", 0)
    init_seed = derive_seed(0, spec.task_id, "init")
    init_inputs = make_init_inputs(ref_mod, init_seed)
    torch.manual_seed(init_seed)
    ref = ref_mod.Model(*init_inputs)
    torch.manual_seed(init_seed)
    model = getattr(prog_mod, job.get("class_name", "ModelNew"))(*init_inputs)
    if isinstance(model, torch.nn.Module) and isinstance(ref, torch.nn.Module):
        model.load_state_dict(ref.state_dict())
        model = model.to(dev)
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or (64 << 20))
    flush = torch.zeros(2 * l2 // 4, dtype=torch.int32, device=dev)

    def inputs(seed: int) -> list:
        torch.manual_seed(seed)
        with torch.device(dev):
            xs = list(ref_mod.get_inputs())
        return [x.to(dev) if isinstance(x, torch.Tensor) else x for x in xs]

    with torch.no_grad():
        for w in range(warmup):
            model(*inputs(1000 + w))
        torch.cuda.synchronize(dev)
        per_call: list[float] = []
        names: dict[str, int] = {}
        t0 = time.perf_counter()
        for i in range(calls):
            x = inputs(2000 + i)
            flush.bitwise_not_()
            torch.cuda.synchronize(dev)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                model(*x)
                torch.cuda.synchronize(dev)
            total = 0.0
            for e in prof.events():
                if e.device_type == DeviceType.CUDA:
                    total += e.time_range.elapsed_us()
                    names[e.name[:80]] = names.get(e.name[:80], 0) + 1
            per_call.append(total / 1000.0)
    del model, ref, flush
    torch.cuda.empty_cache()
    return {"label": job.get("label", ""), "task": spec.task_id, "class": job.get("class_name", "ModelNew"),
            "cupti_ms": statistics.median(per_call), "cupti_ms_calls": per_call,
            "activities_per_call": {k: v / calls for k, v in names.items()},
            "gpu": torch.cuda.get_device_name(dev), "seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", required=True, help="JSON file: a list of {label, task, program, class_name, build_dir, suite}")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    import torch

    from vegtts.evaluate.cuda.worker import set_precision_policy

    set_precision_policy(False)
    torch.set_num_threads(1)
    torch.cuda.set_device(0)
    for job in json.loads(Path(args.jobs).read_text()):
        try:
            res = profile_one(job, args.calls, args.warmup)
        except Exception as exc:  # noqa: BLE001 - one program's failure is reported, the others still run
            res = {"label": job.get("label", ""), "error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
