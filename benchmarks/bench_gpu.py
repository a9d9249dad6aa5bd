"""GPU proof of the CUDA evaluator: A/A noise, hand-written CUDA/Triton candidates and the CUDA hack
corpus with expected verdicts, KernelBench's own harness on the same candidates, the timing-procedure
comparison for short kernels, and multi-GPU evidence and throughput.  One command, everything
printed and written under --out.

    PYTHONPATH=src python benchmarks/bench_gpu.py --out results_dir \
        [--kb-src third_party/KernelBench/src] [--budget-s 540] [--launch-lead-us 200] [--keep-alive-ms 0]

Candidates: tests/gpu_candidates/<task>__<name>.py (first line: "# expected: ..."), appended to
their builtin_gpu task's reference (vegtts.tasks.solution_program).  Phases, in order, each
skipped when the time budget is spent:
  0. benchmarks/gpu_clock_probe.py on the first GPU (timing procedures side by side, SM clocks);
  1. A/A + all candidates on all visible GPUs, cold build cache, with --keep-alive-ms/--launch-lead-us;
  2. KernelBench's eval_kernel_against_ref on every candidate, one process each, one per GPU at a
     time, reusing our builds;
  3. the short-kernel candidates again under the other timing procedures (none, keep-alive only,
     lead only), for the side-by-side comparison with phase 1;
  4. throughput: the --throughput-task programs with a warm build cache on 1 GPU, then on all.
Every timed round's host-clock window and physical GPU (uuid) is logged; the script checks that
no two windows on one GPU overlap.  `--dry` exercises it all on CPU workers (numbers meaningless).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vegtts.evaluate.cuda.build_cache import build_dir_for, is_warm  # noqa: E402
from vegtts.evaluate.cuda.evaluator import evaluate_task_cuda, toolchain_id, visible_gpus  # noqa: E402
from vegtts.evaluate.settings import EvalSettings  # noqa: E402
from vegtts.tasks import load_tasks, solution_program  # noqa: E402

AA_COPIES = {"gpu_gelu_tanh": 2, "gpu_linear_relu": 1, "gpu_softmax_rows": 1, "gpu_cross_entropy": 1}


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


KB_SITE = ""  # --kb-site
DRY_DEVICE: str | None = None  # "cpu" with --dry on a machine without CUDA: exercises the script, measures nothing


def run_ours(specs, jobs, settings, records_dir, details_out, gpus=None, tag=""):
    """jobs: list of (task, label, program).  Returns label -> record dict; wall seconds per task."""
    by_task: dict[str, list] = {}
    for task, label, program in jobs:
        by_task.setdefault(task, []).append((label, program))
    results, walls = {}, {}
    for task, items in by_task.items():
        t0 = time.monotonic()
        details: list[dict] = []
        recs = evaluate_task_cuda(specs[task], [("", p) for _, p in items], settings, records_dir, details=details,
                                  dry_device=DRY_DEVICE, gpus=gpus)
        walls[task] = time.monotonic() - t0
        by_sha = {d["code_sha256"]: d for d in details}
        for (label, _), rec in zip(items, recs):
            d = dict(rec.__dict__)
            d.update(by_sha.get(rec.code_sha256, {}))
            d["label"] = label
            d["phase"] = tag
            results[label] = d
            details_out.append(d)
        log(f"  {task}: {len(items)} programs in {walls[task]:.1f} s on {len(gpus) if gpus else 'all'} GPU(s) [{tag}]")
    return results, walls


def run_kb(kb_src: Path, cand: dict, ref_src: str, build_dir: Path, work: Path, timeout_s: float, gpu: str = "") -> dict:
    work.mkdir(parents=True, exist_ok=True)
    ref_path, cand_path = work / "ref.py", work / "cand.py"
    ref_path.write_text(ref_src)
    cand_path.write_text(cand["program"])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "kb_harness.py"), "--kb-src", str(kb_src), "--ref", str(ref_path),
           "--cand", str(cand_path), "--backend", cand["backend"], "--build-dir", str(build_dir / "torch_extensions"),
           "--trials", "5", "--perf-trials", "30"]
    env = dict(os.environ, TRITON_CACHE_DIR=str(build_dir / "triton"))
    if KB_SITE:
        env["PYTHONPATH"] = KB_SITE + os.pathsep + env.get("PYTHONPATH", "")
    if gpu:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=work)
    except subprocess.TimeoutExpired:
        return {"kb_status": "timeout", "kb_seconds": timeout_s}
    out = {"kb_seconds": round(time.monotonic() - t0, 1), "kb_returncode": proc.returncode, "kb_gpu": gpu}
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


SHORT_KERNEL_AB = {"gpu_gelu_tanh": ["AA0", "cuda_fused", "triton_fused"]}


def aa_program(spec, i: int) -> str:
    return solution_program(spec, f"class ModelNew(Model):\n    pass\n# A/A copy {i}\n")


def check_windows(details: list[dict]) -> dict:
    """Every timed round's window per physical GPU: no two on one GPU overlap; how much GPUs ran at once."""
    by_gpu: dict[str, list[tuple[int, int]]] = {}
    for d in details:
        for _side, uuid, t0, t1 in d.get("timing_windows") or []:
            by_gpu.setdefault(uuid, []).append((t0, t1))
    overlaps = 0
    for wins in by_gpu.values():
        wins.sort()
        overlaps += sum(1 for a, b in zip(wins, wins[1:]) if b[0] < a[1])
    # per program: its timing phase, first to last round (inside the per-GPU lock)
    spans: dict[str, list[tuple[int, int]]] = {}
    for d in details:
        wins = d.get("timing_windows") or []
        if wins:
            spans.setdefault(wins[0][1], []).append((min(w[2] for w in wins), max(w[3] for w in wins)))

    def both(by: dict) -> float:  # seconds during which the first two GPUs were both busy
        uuids = sorted(by)
        if len(uuids) < 2:
            return 0.0
        a, b = by[uuids[0]], by[uuids[1]]
        return sum(max(0, min(x1, y1) - max(x0, y0)) for x0, x1 in a for y0, y1 in b) / 1e9

    return {"gpus": {u: len(w) for u, w in by_gpu.items()}, "same_gpu_overlaps": overlaps, "both_timing_s": round(both(by_gpu), 2),
            "both_in_timing_phase_s": round(both(spans), 1), "timing_phase_s": {u: round(sum(b - a for a, b in v) / 1e9, 1) for u, v in spans.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--kb-src", default="")
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--timing-rounds", type=int, default=10)
    ap.add_argument("--calls-per-round", type=int, default=2)
    ap.add_argument("--keep-alive-ms", type=float, default=0.0, help="phase 1 and 4 timing procedure")
    ap.add_argument("--launch-lead-us", type=float, default=200.0, help="phase 1 and 4 timing procedure")
    ap.add_argument("--procedures", default="none", help="phase 3 procedures: none, keep_alive, lead (comma-separated)")
    ap.add_argument("--kb-site", default="", help="folder prepended to PYTHONPATH of KernelBench's processes (its pydantic)")
    ap.add_argument("--tasks", default="", help="comma-separated task ids (default: all builtin_gpu)")
    ap.add_argument("--throughput-task", default="gpu_gelu_tanh")
    ap.add_argument("--throughput-programs", default="AA0,AA1,AA2,cuda_fused,triton_fused,hack_side_stream")
    ap.add_argument("--skip", default="", help="comma-separated phase numbers to skip")
    ap.add_argument("--dry", action="store_true", help="tiny shapes; without CUDA, CPU workers (a check of the script only)")
    args = ap.parse_args()
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(",")) - {""}

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
    by_label = {f"{c['task']}__{c['name']}": c for c in cands}
    global DRY_DEVICE, KB_SITE
    KB_SITE = args.kb_site
    if torch.cuda.is_available():
        gpus = visible_gpus()
    else:
        if not args.dry:
            raise SystemExit("no CUDA device: run with --dry to exercise the script on CPU workers")
        DRY_DEVICE = "cpu"
        gpus = ["dry0", "dry1"]
        log("dry run on CPU workers: the CUDA/Triton candidates cannot build here; numbers are meaningless")
    log(f"{len(specs)} tasks, {len(cands)} candidates, GPUs {gpus}")

    def settings_for(keep_alive_ms: float, lead_us: float) -> EvalSettings:
        return EvalSettings(device="cuda", correctness_trials=3, timing_rounds=args.timing_rounds,
                            calls_per_round=args.calls_per_round, warmup_calls=2, bootstrap=2000, timeout_s=180,
                            build_cache_dir=str(out / "builds"), keep_alive_ms=keep_alive_ms, launch_lead_us=lead_us)

    main_settings = settings_for(args.keep_alive_ms, args.launch_lead_us)
    all_details: list[dict] = []
    saved: dict = {"settings": main_settings.to_dict(), "gpus": gpus}

    def save() -> None:
        (out / "ours.json").write_text(json.dumps(saved, indent=1, default=str))

    # ---- phase 0: timing procedures side by side on one GPU, outside the evaluator
    if "0" not in skip and not args.dry:
        log("\nphase 0: benchmarks/gpu_clock_probe.py on GPU " + gpus[0])
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus[0])
        try:
            proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_clock_probe.py"), "--out", str(out)],
                                  capture_output=True, text=True, timeout=max(30, min(90, left() - 400)), env=env)
            log(proc.stdout + proc.stderr[-2000:])
        except subprocess.TimeoutExpired:
            log("  clock probe: timed out")

    # ---- phase 1: A/A + every candidate on all GPUs, cold build cache
    ours: dict = {}
    log(f"\nphase 1: A/A and candidates on {len(gpus)} GPU(s), cold build cache, keep_alive_ms {main_settings.keep_alive_ms}, "
        f"launch_lead_us {main_settings.launch_lead_us}")
    t_phase1 = time.monotonic()
    for task in specs if "1" not in skip else []:
        if left() < 120:
            log(f"  {task}: skipped, budget spent")
            continue
        jobs = [(task, f"{task}__AA{i}", aa_program(specs[task], i)) for i in range(AA_COPIES.get(task, 0))]
        jobs += [(c["task"], f"{c['task']}__{c['name']}", c["program"]) for c in cands if c["task"] == task]
        res, _ = run_ours(specs, jobs, main_settings, out / "records_main", all_details, gpus=gpus, tag="main")
        ours.update(res)
        saved["main"] = ours
        save()
    log(f"phase 1: {len(ours)} programs in {time.monotonic() - t_phase1:.1f} s")

    # ---- phase 2: KernelBench's harness on the same candidates, one process per GPU at a time
    kb: dict = {}
    if "2" not in skip and args.kb_src and Path(args.kb_src).is_dir():
        kb_src = Path(args.kb_src).resolve()
        log(f"\nphase 2: KernelBench eval_kernel_against_ref (5 correctness trials, 30 timed, cuda_event), {len(gpus)} at a time")
        todo = [c for c in cands if f"{c['task']}__{c['name']}" in ours]
        todo.sort(key=lambda c: "hack" in c["name"])  # honest candidates first: the agreement table needs them most
        free: "list[str]" = list(gpus)
        import threading

        lock = threading.Lock()

        def one(c: dict) -> tuple[str, dict]:
            label = f"{c['task']}__{c['name']}"
            if left() < 25:
                return label, {"kb_status": "not run (budget)"}
            with lock:
                gpu = free.pop()
            try:
                bdir = build_dir_for(out / "builds", c["program"], toolchain_id())
                return label, run_kb(kb_src, c, specs[c["task"]].source, bdir, out / "kb" / label, max(20, min(150, left() - 10)),
                                     "" if DRY_DEVICE else gpu)
            finally:
                with lock:
                    free.append(gpu)

        with concurrent.futures.ThreadPoolExecutor(len(gpus)) as pool:
            for label, k in pool.map(one, todo):
                kb[label] = k
                log(f"  {label:<44} GPU {k.get('kb_gpu', '-')}: {k.get('kb_status')} speedup {k.get('kb_speedup', float('nan')):.3f} "
                    f"ref {k.get('kb_ref_runtime_ms', float('nan'))} ms cand {k.get('kb_runtime_ms', float('nan'))} ms "
                    f"excessive={k.get('kb_metadata', {}).get('excessive_speedup', '-')} ({k.get('kb_seconds')} s)")
                if k.get("kb_status") not in ("correct", "not run (budget)"):
                    log("     " + (str(k.get("kb_metadata", ""))[:300] or k.get("kb_tail", "")[-300:]).replace("\n", " "))
        (out / "kb.json").write_text(json.dumps(kb, indent=1, default=str))

    # ---- phase 3: short kernels under the other timing procedures (phase 1 is the fourth)
    known = {"none": (0.0, 0.0), "keep_alive": (args.keep_alive_ms or 10.0, 0.0), "lead": (0.0, args.launch_lead_us or 200.0)}
    variants = {v: known[v] for v in args.procedures.split(",") if v}
    ab: dict = {v: {} for v in variants}
    if "3" not in skip:
        log("\nphase 3: short-kernel candidates under each timing procedure (keep_alive_ms, launch_lead_us)")
        for task, names in SHORT_KERNEL_AB.items():
            if task not in specs:
                continue
            jobs = [(task, f"{task}__{n}", aa_program(specs[task], int(n[2:])) if n.startswith("AA") else by_label[f"{task}__{n}"]["program"])
                    for n in names if n.startswith("AA") or f"{task}__{n}" in by_label]
            for variant, (ka, lead) in variants.items():
                if left() < 60:
                    log(f"  {task} {variant}: skipped, budget spent")
                    continue
                res, _ = run_ours(specs, jobs, settings_for(ka, lead), out / f"records_{variant}", all_details, gpus=gpus, tag=variant)
                ab[variant].update(res)
                saved["procedures"] = ab
                save()

    # ---- phase 4: throughput on 1 GPU and on all GPUs, warm build cache, same programs
    through: dict = {}
    tt = args.throughput_task
    if "4" not in skip and tt in specs:
        names = args.throughput_programs.split(",")
        jobs = [(tt, f"{tt}__{n}", aa_program(specs[tt], int(n[2:])) if n.startswith("AA") else by_label[f"{tt}__{n}"]["program"])
                for n in names if n.startswith("AA") or f"{tt}__{n}" in by_label]
        cold = [j for j in jobs if not is_warm(build_dir_for(out / "builds", j[2], toolchain_id())) and "__AA" not in j[1]]
        if cold:  # both throughput runs must find every build warm
            t0 = time.monotonic()
            run_ours(specs, cold, replace(main_settings, timing_rounds=1, calls_per_round=1, correctness_trials=1, bootstrap=10),
                     out / "records_buildwarm", [], gpus=gpus, tag="build")
            log(f"  built {len(cold)} programs first ({time.monotonic() - t0:.1f} s)")
        log(f"\nphase 4: throughput, {len(jobs)} {tt} programs, warm build cache, fresh verdict cache")
        for n in sorted({1, len(gpus)}):
            if left() < (70 if n == 1 else 45):
                log(f"  {n} GPU(s): skipped, budget spent")
                continue
            t0 = time.monotonic()
            res, _ = run_ours(specs, jobs, main_settings, out / f"records_{n}gpu", all_details, gpus=gpus[:n], tag=f"{n}gpu")
            through[n] = {"wall_s": time.monotonic() - t0, "programs": len(jobs), "records": res}
            saved["throughput"] = through
            save()

    # ---- summary
    aa = [r for k, r in ours.items() if "__AA" in k]
    logs = [math.log(r["speedup"]) for r in aa if r["status"] == "ok" and r["speedup"] > 0]
    log("\nA/A (reference against itself), per program: speedup [95% interval], ref/cand ms")
    for r in aa:
        log(f"  {r['label']:<28} {r['status']:<8} {r['speedup']:.3f} [{r['speedup_lo']:.3f}, {r['speedup_hi']:.3f}]  "
            f"{r['ref_time_ms']:.4f}/{r['cand_time_ms']:.4f} ms  spread {r['ref_time_spread']:.3f}/{r['cand_time_spread']:.3f}  GPU {r.get('gpu')}")
    if logs:
        sd = statistics.pstdev(logs) if len(logs) > 1 else 0.0
        log(f"A/A: n={len(logs)} mean log-speedup {statistics.mean(logs):+.4f} sd {sd:.4f}; "
            f"false fast_1 {sum(r['speedup'] > 1 for r in aa)}/{len(aa)}; false fast_1_sig {sum(r['speedup_lo'] > 1 for r in aa)}/{len(aa)}; "
            f"interval covers 1: {sum(r['speedup_lo'] <= 1 <= r['speedup_hi'] for r in aa)}/{len(aa)}")

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
                     "speedup_current_stream": r.get("speedup_current_stream"), "gpu": r.get("gpu"), **k})
        kbs = f"{k.get('kb_status', '-')}, {k['kb_speedup']:.2f}x" if "kb_speedup" in k else k.get("kb_status", "-")
        why = r["guard"] or r["flags"] or (r["error"][:60].replace("\n", " ") if r["status"] != "ok" else "")
        cs = r.get("speedup_current_stream")
        why += f" (current-stream-only {cs:.2f}x)" if cs else ""
        log(f"  {label:<44} {r['status']:<14} {r['speedup']:7.3f} [{r['speedup_lo']:.3f}, {r['speedup_hi']:.3f}] {why:<28} | "
            f"{c['expected']:<36} | {'yes' if match else 'NO'} | {kbs}")
    log(f"expected verdicts met: {sum(r['match'] for r in rows)}/{len(rows)}")

    log(f"\nTiming procedures side by side (phase 3; 'main' = phase 1: keep_alive_ms {args.keep_alive_ms}, launch_lead_us {args.launch_lead_us}): ref / cand ms (current-stream ms), speedup; KernelBench ref / cand ms")
    procs = {**{v: ab[v] for v in variants}, "main": ours}
    for task, names in SHORT_KERNEL_AB.items():
        for n in names:
            label = f"{task}__{n}"
            cells = []
            for v, recs in procs.items():
                r = recs.get(label)
                cells.append(f"{v}: {r['ref_time_ms']:.4f}/{r['cand_time_ms']:.4f} ({r.get('ref_stream_ms', float('nan')):.4f}/"
                             f"{r.get('cand_stream_ms', float('nan')):.4f}) {r['speedup']:.2f}x" if r and r["status"] == "ok" else f"{v}: -")
            k = kb.get(label, {})
            kbs = f"KB {k['kb_ref_runtime_ms']:.4f}/{k['kb_runtime_ms']:.4f} {k['kb_speedup']:.2f}x" if "kb_speedup" in k else "KB -"
            log(f"  {label:<30} " + " | ".join(cells) + f" | {kbs}")

    log("\nMulti-GPU: every timed round's host-clock window per physical GPU")
    for tag in sorted({d.get("phase", "") for d in all_details}):
        chk = check_windows([d for d in all_details if d.get("phase") == tag])
        log(f"  [{tag}] rounds per GPU {chk['gpus']}; windows overlapping on one GPU: {chk['same_gpu_overlaps']}; "
            f"seconds with both GPUs inside a timed round at once: {chk['both_timing_s']}; seconds in candidates' timing phases "
            f"per GPU {chk['timing_phase_s']}, both GPUs at once {chk['both_in_timing_phase_s']}")
    chk_all = check_windows(all_details)
    log(f"  all phases: rounds per GPU {chk_all['gpus']}; overlapping on one GPU: {chk_all['same_gpu_overlaps']}")
    if len(through) >= 1:
        base = through.get(1)
        for n, t in sorted(through.items()):
            speed = f", {base['wall_s'] / t['wall_s']:.2f}x the 1-GPU throughput" if base and n != 1 else ""
            log(f"  throughput {n} GPU(s): {t['programs']} programs in {t['wall_s']:.1f} s ({t['programs'] / t['wall_s']:.3f} programs/s){speed}")
            same = sum(1 for lab, r in t["records"].items() if base and r["status"] == base["records"].get(lab, {}).get("status"))
            if base and n != 1:
                log(f"    same status as on 1 GPU: {same}/{t['programs']}")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "windows": chk_all, "throughput": {n: {k: v for k, v in t.items() if k != "records"} for n, t in through.items()}},
                                                 indent=1, default=str))
    log(f"total {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
