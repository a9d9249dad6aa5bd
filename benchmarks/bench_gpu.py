"""GPU proof of the CUDA evaluator: A/A noise, hand-written CUDA/Triton candidates and the CUDA hack
corpus with expected verdicts, throughput with a cold and a warm build cache, and KernelBench's own
harness on the same candidates.  One command, everything printed and written under --out.

    PYTHONPATH=src python benchmarks/bench_gpu.py --out results_dir \
        [--kb-src third_party/KernelBench/src] [--budget-s 480]

Candidates: tests/gpu_candidates/<task>__<name>.py (first line: "# expected: ..."), appended to
their builtin_gpu task's reference (vegtts.tasks.solution_program).  Phases, in order, each
skipped when the time budget is spent: (1) A/A + all candidates, cold build cache; (2) the
compiled candidates again with a warm build cache (fresh verdict cache); (3) KernelBench's
eval_kernel_against_ref on every candidate, one process each, reusing our builds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vegtts.evaluate.cuda.build_cache import build_dir_for  # noqa: E402
from vegtts.evaluate.cuda.evaluator import evaluate_task_cuda, toolchain_id  # noqa: E402
from vegtts.evaluate.settings import EvalSettings  # noqa: E402
from vegtts.tasks import load_tasks, solution_program  # noqa: E402

AA_COPIES = {"gpu_gelu_tanh": 3, "gpu_linear_relu": 2, "gpu_softmax_rows": 1, "gpu_cross_entropy": 1}


def log(msg: str) -> None:
    print(msg, flush=True)


def load_candidates(specs: dict) -> list[dict]:
    out = []
    for path in sorted((ROOT / "tests" / "gpu_candidates").glob("*.py")):
        task, name = path.stem.split("__", 1)
        if task not in specs:
            continue
        text = path.read_text()
        expected = text.splitlines()[0].split("expected:", 1)[1].strip()
        out.append({"task": task, "name": name, "expected": expected, "program": solution_program(specs[task], text),
                    "backend": "triton" if "import triton" in text else "cuda"})
    return out


def verdict_matches(expected: str, rec: dict) -> bool:
    status = rec["status"]
    if expected == "ok-fast":
        return status == "ok" and rec["speedup_lo"] > 1
    if expected == "ok-slow":
        return status == "ok" and rec["speedup_hi"] < 1
    if expected == "ok-not-fast":
        return status == "ok" and rec["speedup_lo"] <= 1.05
    if expected.startswith("rejected:"):
        return status == "rejected" and rec["guard"].startswith(expected.split(":", 1)[1])
    return status == expected


DRY_DEVICE: str | None = None  # "cpu" with --dry on a machine without CUDA: exercises the script, measures nothing


def run_ours(specs, jobs, settings, records_dir, details_out):
    """jobs: list of (task, label, program).  Returns label -> record dict; wall seconds per task."""
    by_task: dict[str, list] = {}
    for task, label, program in jobs:
        by_task.setdefault(task, []).append((label, program))
    results, walls = {}, {}
    for task, items in by_task.items():
        t0 = time.monotonic()
        details: list[dict] = []
        recs = evaluate_task_cuda(specs[task], [("", p) for _, p in items], settings, records_dir, details=details,
                                  dry_device=DRY_DEVICE)
        walls[task] = time.monotonic() - t0
        by_sha = {d["code_sha256"]: d for d in details}
        for (label, _), rec in zip(items, recs):
            d = dict(rec.__dict__)
            d.update(by_sha.get(rec.code_sha256, {}))
            d["label"] = label
            results[label] = d
            details_out.append(d)
        log(f"  {task}: {len(items)} programs in {walls[task]:.1f} s")
    return results, walls


def run_kb(kb_src: Path, cand: dict, ref_src: str, build_dir: Path, work: Path, timeout_s: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    ref_path, cand_path = work / "ref.py", work / "cand.py"
    ref_path.write_text(ref_src)
    cand_path.write_text(cand["program"])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "kb_harness.py"), "--kb-src", str(kb_src), "--ref", str(ref_path),
           "--cand", str(cand_path), "--backend", cand["backend"], "--build-dir", str(build_dir / "torch_extensions"),
           "--trials", "5", "--perf-trials", "30"]
    env = dict(os.environ, TRITON_CACHE_DIR=str(build_dir / "triton"))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=work)
    except subprocess.TimeoutExpired:
        return {"kb_status": "timeout", "kb_seconds": timeout_s}
    out = {"kb_seconds": round(time.monotonic() - t0, 1), "kb_returncode": proc.returncode}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("KB_RESULT ")]
    if lines:
        res = json.loads(lines[-1][len("KB_RESULT "):])
        out.update({f"kb_{k}": v for k, v in res.items()})
        if not res["compiled"]:
            out["kb_status"] = "not compiled"
        elif not res["correctness"]:
            out["kb_status"] = "incorrect"
        else:
            out["kb_status"] = "correct"
    else:
        out["kb_status"] = f"no result (exit {proc.returncode})"
        out["kb_tail"] = (proc.stdout[-600:] + proc.stderr[-600:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--kb-src", default="")
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--timing-rounds", type=int, default=10)
    ap.add_argument("--calls-per-round", type=int, default=2)
    ap.add_argument("--tasks", default="", help="comma-separated task ids (default: all builtin_gpu)")
    ap.add_argument("--kb-only", action="store_true", help="only phase 3 (KernelBench's harness), hacks first")
    ap.add_argument("--dry", action="store_true", help="tiny shapes; without CUDA, CPU workers (a check of the script only)")
    args = ap.parse_args()
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def left() -> float:
        return args.budget_s - (time.monotonic() - start)

    import torch

    log(f"torch {torch.__version__} cuda {torch.version.cuda}; toolchain {toolchain_id()}")
    try:
        import triton

        log(f"triton {triton.__version__}")
    except ImportError:
        log("triton not installed")
    cfg: dict = {"suite": "builtin_gpu", "ids": args.tasks.split(",") if args.tasks else "all"}
    if args.dry:
        cfg["shape_scale"] = 1 / 64
    specs = {s.task_id: s for s in load_tasks(cfg)}
    cands = [c for c in load_candidates(specs) if c["task"] in specs]
    log(f"{len(specs)} tasks, {len(cands)} candidates")
    if not torch.cuda.is_available():
        if not args.dry:
            raise SystemExit("no CUDA device: run with --dry to exercise the script on CPU workers")
        global DRY_DEVICE
        DRY_DEVICE = "cpu"
        log("dry run on CPU workers: the CUDA/Triton candidates cannot build here; numbers are meaningless")
    settings = EvalSettings(device="cuda", correctness_trials=3, timing_rounds=args.timing_rounds,
                            calls_per_round=args.calls_per_round, warmup_calls=2, bootstrap=2000, timeout_s=180,
                            build_cache_dir=str(out / "builds"))
    all_details: list[dict] = []

    if args.kb_only:
        kb_src = Path(args.kb_src).resolve()
        ordered = sorted(cands, key=lambda c: ("hack" not in c["name"], c["name"]))
        log("KernelBench eval_kernel_against_ref only (5 correctness trials, 30 timed, cuda_event), own build folders")
        kb_only: dict = {}
        for c in ordered:
            if left() < 30:
                log("stopped: budget")
                break
            label = f"{c['task']}__{c['name']}"
            bdir = build_dir_for(out / "kb_builds", c["program"], toolchain_id())
            kb_only[label] = run_kb(kb_src, c, specs[c["task"]].source, bdir, out / "kb" / label, min(150, left() - 10))
            k = kb_only[label]
            log(f"  {label:<44} expected(ours) {c['expected']:<34} KB: {k.get('kb_status')} speedup {k.get('kb_speedup', float('nan')):.3f} "
                f"ref {k.get('kb_ref_runtime_ms', float('nan'))} ms cand {k.get('kb_runtime_ms', float('nan'))} ms "
                f"excessive={k.get('kb_metadata', {}).get('excessive_speedup', '-')} ({k.get('kb_seconds')} s)")
            if k.get("kb_status") != "correct":
                log("     " + (str(k.get("kb_metadata", ""))[:300] or k.get("kb_tail", "")[-300:]).replace("\n", " "))
            (out / "kb.json").write_text(json.dumps(kb_only, indent=1, default=str))
        log(f"total {time.monotonic() - start:.1f} s")
        return

    # ---- phases 1 and 2, task by task (the task's inputs are generated once for both):
    # A/A + every candidate with a cold build cache, then the candidates that built, warm
    ours: dict = {}
    warm: dict = {}
    walls_cold: dict = {}
    cold_s = warm_s = 0.0
    n_cold = 0
    log("phase 1 (A/A and candidates, cold build cache) and phase 2 (same candidates, warm build cache)")
    for task in specs:
        if left() < 90:
            log(f"  {task}: skipped, budget spent")
            continue
        jobs = [(task, f"{task}__AA{i}", solution_program(specs[task], f"class ModelNew(Model):\n    pass\n# A/A copy {i}\n"))
                for i in range(AA_COPIES.get(task, 0))]
        jobs += [(c["task"], f"{c['task']}__{c['name']}", c["program"]) for c in cands if c["task"] == task]
        t0 = time.monotonic()
        res, walls = run_ours(specs, jobs, settings, out / "records_cold", all_details)
        cold_s += time.monotonic() - t0
        n_cold += len(jobs)
        ours.update(res)
        walls_cold.update(walls)
        rerun = [j for j in jobs if "__AA" not in j[1] and res[j[1]]["status"] != "compile_error"]
        if rerun and left() > 150:
            t0 = time.monotonic()
            res2, _ = run_ours(specs, rerun, settings, out / "records_warm", all_details)
            warm_s += time.monotonic() - t0
            warm.update(res2)
        (out / "ours.json").write_text(json.dumps({"cold": ours, "warm": warm}, indent=1, default=str))

    aa = [r for k, r in ours.items() if "__AA" in k]
    logs = [float(__import__("math").log(r["speedup"])) for r in aa if r["status"] == "ok" and r["speedup"] > 0]
    log("\nA/A (reference against itself), per program: speedup [95% interval], ref/cand ms")
    for r in aa:
        log(f"  {r['label']:<28} {r['status']:<8} {r['speedup']:.3f} [{r['speedup_lo']:.3f}, {r['speedup_hi']:.3f}]  "
            f"{r['ref_time_ms']:.4f}/{r['cand_time_ms']:.4f} ms  spread {r['ref_time_spread']:.3f}/{r['cand_time_spread']:.3f}")
    if logs:
        sd = statistics.pstdev(logs) if len(logs) > 1 else 0.0
        log(f"A/A: n={len(logs)} mean log-speedup {statistics.mean(logs):+.4f} sd {sd:.4f}; "
            f"false fast_1 {sum(r['speedup'] > 1 for r in aa)}/{len(aa)}; false fast_1_sig {sum(r['speedup_lo'] > 1 for r in aa)}/{len(aa)}; "
            f"interval covers 1: {sum(r['speedup_lo'] <= 1 <= r['speedup_hi'] for r in aa)}/{len(aa)}")
    compiled = [c for c in cands if ours.get(f"{c['task']}__{c['name']}", {}).get("status", "compile_error") != "compile_error"]

    # ---- phase 3: KernelBench's harness on the same candidates
    kb: dict = {}
    if args.kb_src and Path(args.kb_src).is_dir():
        log("\nphase 3: KernelBench eval_kernel_against_ref (5 correctness trials, 30 timed, cuda_event)")
        for c in [c for c in cands if f"{c['task']}__{c['name']}" in ours]:
            if left() < 25:
                log("phase 3 stopped: budget")
                break
            label = f"{c['task']}__{c['name']}"
            bdir = build_dir_for(out / "builds", c["program"], toolchain_id())
            kb[label] = run_kb(Path(args.kb_src).resolve(), c, specs[c["task"]].source, bdir, out / "kb" / label, min(150, left() - 10))
            log(f"  {label}: {kb[label].get('kb_status')} speedup {kb[label].get('kb_speedup', float('nan')):.3f} "
                f"({kb[label].get('kb_seconds')} s)")
        (out / "kb.json").write_text(json.dumps(kb, indent=1, default=str))

    # ---- summary
    log("\nPer candidate: ours (status, speedup [95% CI], guard/flags) | expected | match | KernelBench (status, speedup)")
    rows = []
    for c in cands:
        label = f"{c['task']}__{c['name']}"
        if label not in ours:
            continue
        r = ours[label]
        k = kb.get(label, {})
        match = verdict_matches(c["expected"], r)
        rows.append({"label": label, "expected": c["expected"], "match": match, **{f"ours_{x}": r[x] for x in
                     ("status", "speedup", "speedup_lo", "speedup_hi", "guard", "flags", "ref_time_ms", "cand_time_ms")},
                     "speedup_current_stream": r.get("speedup_current_stream"), **k})
        kbs = f"{k.get('kb_status', '-')}, {k['kb_speedup']:.2f}x" if "kb_speedup" in k else k.get("kb_status", "-")
        why = r["guard"] or r["flags"] or (r["error"][:60].replace("\n", " ") if r["status"] != "ok" else "")
        cs = r.get("speedup_current_stream")
        why += f" (current-stream-only {cs:.2f}x)" if cs else ""
        log(f"  {label:<44} {r['status']:<14} {r['speedup']:7.3f} [{r['speedup_lo']:.3f}, {r['speedup_hi']:.3f}] {why:<28} | "
            f"{c['expected']:<36} | {'yes' if match else 'NO'} | {kbs}")
    log(f"expected verdicts met: {sum(r['match'] for r in rows)}/{len(rows)}")
    cold_list = [ours[f"{c['task']}__{c['name']}"] for c in compiled]
    log(f"\nall phase-1 programs (A/A included): {n_cold} in {cold_s:.1f} s of wall time, reference workers and inputs included")
    if warm:
        same = [k for k in warm]
        cold_sum = sum(ours[k]["eval_seconds"] for k in same)
        warm_sum = sum(warm[k]["eval_seconds"] for k in same)
        log(f"throughput on the same {len(same)} candidates (per-candidate evaluation seconds, summed): cold build cache "
            f"{cold_sum:.1f} s ({len(same) / cold_sum:.3f} cand/s, median {statistics.median(ours[k]['eval_seconds'] for k in same):.2f} s, "
            f"median build {statistics.median(ours[k].get('build_s', float('nan')) for k in same):.2f} s); warm build cache "
            f"{warm_sum:.1f} s ({len(same) / warm_sum:.3f} cand/s, median {statistics.median(warm[k]['eval_seconds'] for k in same):.2f} s, "
            f"median build {statistics.median(warm[k].get('build_s', float('nan')) for k in same):.2f} s); "
            f"build folder already warm: {sum(bool(warm[k].get('build_cache_warm')) for k in same)}/{len(same)}")
        for c in compiled:
            label = f"{c['task']}__{c['name']}"
            a, b = ours[label], warm.get(label)
            if b:
                log(f"  {label:<44} build cold {a.get('build_s', float('nan')):7.2f} s warm {b.get('build_s', float('nan')):6.2f} s; "
                    f"eval cold {a['eval_seconds']:6.2f} s warm {b['eval_seconds']:6.2f} s; warm verdict {b['status']} {b['speedup']:.3f}")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "cold_s": cold_s, "warm_s": warm_s, "walls_cold": walls_cold},
                                                 indent=1, default=str))
    log(f"total {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
