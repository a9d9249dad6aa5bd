"""GPU proof of the CUDA evaluator, one command: verdicts, the profiler comparison, throughput, A/A.

    PYTHONPATH=src python benchmarks/bench_gpu.py --out DIR [--phases prebuild,verdicts,profiler,throughput,kb_aa]
        [--kb-path DIR_WITH_KernelBench/level1] [--budget-s 560] [--dry]

Phases (each skipped when --budget-s is spent; results in DIR/bench.json, the tables printed last):
  prebuild    the CUDA (load_inline) candidates compiled in parallel into the build cache, so every
              later phase finds its build warm (cold build times printed);
  verdicts    on all visible GPUs: A/A programs (the reference as ModelNew) and every candidate of
              tests/gpu_candidates/ with its expected verdict ("# expected: ..." first line); seconds
              per candidate (its setup, checks and timing; the GPU session start is per task);
  profiler    each task's reference and every honest candidate again under torch.profiler (CUPTI,
              benchmarks/gpu_profile_program.py, one process each, one per GPU at a time): the median
              kernel-duration sum per call against the evaluator's median per-call time, and the
              speedups of both;
  throughput  --throughput-n correct programs of one 128 MiB-input task with warm builds and warm
              sessions: on one GPU, then on all; programs per second and the ratio;
  kb_aa       A/A on KernelBench level-1 problems (--kb-ids, --kb-copies each, --kb-shape-scale): how
              often the interval lies above 1 (a false "faster"), below 1, or covers it.
Every timed call's host-clock window and physical GPU are logged; the script checks that no two
windows on one GPU overlap.  `--dry` runs everything on CPU workers at tiny shapes (a check of the
script only; CUDA candidates cannot build there, numbers are meaningless).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vegtts.evaluate.cuda.build_cache import build_dir_for, build_env, is_warm  # noqa: E402
from vegtts.evaluate.cuda.evaluator import evaluate_task_cuda  # noqa: E402
from vegtts.evaluate.cuda.gpu_session import close_sessions  # noqa: E402
from vegtts.evaluate.cuda.processes import toolchain_id, visible_gpus  # noqa: E402
from vegtts.evaluate.settings import EvalSettings  # noqa: E402
from vegtts.tasks import load_tasks, solution_program  # noqa: E402

KB_IDS = [19, 21, 23, 24, 26, 36, 38, 40, 47, 88, 89, 94, 95]
DRY_DEVICE: str | None = None


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
        out.append({"task": task, "name": name, "label": f"{task}__{name}", "expected": expected, "text": text,
                    "program": solution_program(specs[task], text), "honest": expected.startswith("ok") and "hack" not in name})
    return out


def aa_program(spec, i: int) -> str:
    return solution_program(spec, f"class ModelNew(Model):\n    pass\n# A/A copy {i}\n")


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


def run_task(spec, items: list[tuple[str, str]], settings: EvalSettings, records_dir: Path, gpus: list[str], tag: str,
             all_details: list[dict]) -> tuple[dict[str, dict], float]:
    """Evaluate (label, program) pairs of one task; label -> record dict with its timing details."""
    t0 = time.monotonic()
    details: list[dict] = []
    recs = evaluate_task_cuda(spec, [("", p) for _, p in items], settings, records_dir, details=details, dry_device=DRY_DEVICE, gpus=gpus)
    wall = time.monotonic() - t0
    by_sha = {d["code_sha256"]: d for d in details}
    out = {}
    for (label, _), rec in zip(items, recs):
        d = dict(rec.__dict__)
        d.update(by_sha.get(rec.code_sha256, {}))
        d["label"], d["phase"] = label, tag
        out[label] = d
        all_details.append(d)
    log(f"  {spec.task_id}: {len(items)} programs in {wall:.1f} s on {len(gpus)} GPU(s) [{tag}]")
    return out, wall


def check_windows(details: list[dict]) -> dict:
    """Every timed call's window per physical GPU: none may overlap another on the same GPU."""
    by_gpu: dict[str, list[tuple[int, int]]] = {}
    for d in details:
        for _side, uuid, t0, t1 in d.get("timing_windows") or []:
            by_gpu.setdefault(uuid, []).append((t0, t1))
    overlaps = 0
    for wins in by_gpu.values():
        wins.sort()
        overlaps += sum(1 for a, b in zip(wins, wins[1:]) if b[0] < a[1])
    return {"calls_per_gpu": {u: len(w) for u, w in by_gpu.items()}, "same_gpu_overlaps": overlaps}


# ----------------------------------------------------------------------------- phases


def prebuild(cands: list[dict], build_root: Path, left) -> dict:
    """Compile every load_inline candidate at once, each in its own process and build folder."""
    jobs = [c for c in cands if "load_inline" in c["text"]]
    code = ("import importlib.util, sys\nspec = importlib.util.spec_from_file_location('vegtts_candidate', sys.argv[1])\n"
            "m = importlib.util.module_from_spec(spec)\nsys.modules['vegtts_candidate'] = m\nspec.loader.exec_module(m)\n")

    def one(c: dict) -> tuple[str, dict]:
        bdir = build_dir_for(build_root, c["program"], toolchain_id())
        env = dict(os.environ, **build_env(bdir))
        src = bdir / "prebuild_program.py"
        src.write_text(c["program"])
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, env=env,
                                  timeout=max(30, left() - 30))
            ok, tail = proc.returncode == 0, (proc.stdout + proc.stderr)[-300:]
        except subprocess.TimeoutExpired:
            ok, tail = False, "timed out"
        return c["label"], {"ok": ok, "seconds": round(time.monotonic() - t0, 1), "warm": is_warm(bdir), "tail": "" if ok else tail}

    if DRY_DEVICE or not jobs:
        return {}
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        res = dict(pool.map(one, jobs))
    for label, r in res.items():
        log(f"  {label:<44} built in {r['seconds']:6.1f} s ok={r['ok']} {r['tail'][-120:]!r}" if not r["ok"] else
            f"  {label:<44} built in {r['seconds']:6.1f} s")
    return res


def profile_programs(jobs: list[dict], gpus: list[str], build_root: Path, out: Path, left) -> dict[str, dict]:
    """CUPTI kernel time of each job, one profiling process per GPU (each GPU its share of the jobs, in turn)."""
    progs = out / "profiled"
    progs.mkdir(exist_ok=True)
    shares: list[list[dict]] = [[] for _ in gpus]
    for i, job in enumerate(jobs):
        path = progs / f"{job['label']}.py"
        path.write_text(job["program"])
        shares[i % len(gpus)].append({"label": job["label"], "task": job["task"], "program": str(path), "class_name": job["class"],
                                      "build_dir": str(build_dir_for(build_root, job["program"], toolchain_id()))})

    def one(gpu: str, share: list[dict]) -> list[dict]:
        jobs_file = progs / f"jobs_gpu{gpu}.json"
        jobs_file.write_text(json.dumps(share))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_profile_program.py"), "--jobs", str(jobs_file)]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, PYTHONPATH=str(ROOT / "src"))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30, left() - 15))
            text, tail = proc.stdout, proc.stderr[-800:]
        except subprocess.TimeoutExpired as exc:
            text, tail = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), "timed out"
        res = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
        done = {r["label"] for r in res}
        res += [{"label": j["label"], "error": f"no result ({tail[-300:]})"} for j in share if j["label"] not in done]
        return [{**r, "profile_gpu": gpu} for r in res]

    with concurrent.futures.ThreadPoolExecutor(len(gpus)) as pool:
        results = [r for rs in pool.map(one, gpus, shares) for r in rs]
    return {r["label"]: r for r in results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", default="prebuild,verdicts,profiler,throughput,kb_aa")
    ap.add_argument("--budget-s", type=float, default=560)
    ap.add_argument("--tasks", default="", help="comma-separated builtin_gpu task ids (default: all)")
    ap.add_argument("--aa-copies", type=int, default=2, help="A/A programs per builtin_gpu task in the verdicts phase")
    ap.add_argument("--throughput-task", default="gpu_gelu_tanh")
    ap.add_argument("--throughput-n", type=int, default=24)
    ap.add_argument("--kb-path", default="", help="folder holding KernelBench/level1 (a KernelBench checkout or a copy)")
    ap.add_argument("--kb-ids", default=",".join(map(str, KB_IDS)))
    ap.add_argument("--kb-copies", type=int, default=4)
    ap.add_argument("--kb-shape-scale", type=float, default=1 / 16)
    ap.add_argument("--dry", action="store_true", help="tiny shapes; without CUDA, CPU workers (a check of the script only)")
    args = ap.parse_args()
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phases = set(args.phases.split(","))

    def left() -> float:
        return args.budget_s - (time.monotonic() - start)

    import torch

    global DRY_DEVICE
    if torch.cuda.is_available():
        gpus = visible_gpus()
    else:
        if not args.dry:
            raise SystemExit("no CUDA device: run with --dry to exercise the script on CPU workers")
        DRY_DEVICE, gpus = "cpu", ["dry0", "dry1"]
        log("dry run on CPU workers: CUDA/Triton candidates cannot build here; numbers are meaningless")
    log(f"torch {torch.__version__} cuda {torch.version.cuda}; toolchain {toolchain_id()}; GPUs {gpus}")
    cfg: dict = {"suite": "builtin_gpu", "ids": args.tasks.split(",") if args.tasks else "all"}
    if args.dry:
        cfg["shape_scale"] = 1 / 64
        cfg["shape_overrides"] = {"gpu_linear_relu": {"IN_FEATURES": 64, "OUT_FEATURES": 32}}
    specs = {s.task_id: s for s in load_tasks(cfg)}
    cands = load_candidates(specs)
    build_root = out / "builds"
    settings = EvalSettings(device="cuda", build_cache_dir=str(build_root), timeout_s=180,
                            **({"timing_rounds": 3, "calls_per_round": 2, "bootstrap": 200} if args.dry else {}))
    saved: dict[str, Any] = {"settings": settings.to_dict(), "gpus": gpus, "argv": sys.argv}
    all_details: list[dict] = []

    def save() -> None:
        (out / "bench.json").write_text(json.dumps(saved, indent=1, default=str))

    if "prebuild" in phases:
        log(f"\nprebuild: {sum('load_inline' in c['text'] for c in cands)} CUDA candidates compiled in parallel")
        saved["prebuild"] = prebuild(cands, build_root, left)
        save()

    verdicts: dict[str, dict] = {}
    if "verdicts" in phases:
        log(f"\nverdicts: {args.aa_copies} A/A programs per task and {len(cands)} candidates on {len(gpus)} GPU(s)")
        for task, spec in specs.items():
            if left() < 60:
                log(f"  {task}: skipped, budget spent")
                continue
            items = [(f"{task}__AA{i}", aa_program(spec, i)) for i in range(args.aa_copies)]
            items += [(c["label"], c["program"]) for c in cands if c["task"] == task]
            try:
                res, _ = run_task(spec, items, settings, out / "records_verdicts", gpus, "verdicts", all_details)
            except Exception as exc:  # noqa: BLE001 - one task's failure is reported, the others still run
                log(f"  {task}: failed: {type(exc).__name__}: {str(exc)[:1500]}")
                saved.setdefault("task_errors", {})[task] = str(exc)[:4000]
                continue
            verdicts.update(res)
            saved["verdicts"] = verdicts
            save()

    profiled: dict[str, dict] = {}
    if "profiler" in phases and verdicts and not DRY_DEVICE:
        jobs = [{"label": f"{t}__reference", "task": t, "program": specs[t].source, "class": "Model"} for t in specs]
        jobs += [{"label": c["label"], "task": c["task"], "program": c["program"], "class": "ModelNew"} for c in cands
                 if c["honest"] and verdicts.get(c["label"], {}).get("status") == "ok"]
        log(f"\nprofiler: {len(jobs)} programs under torch.profiler (CUPTI), one process each, {len(gpus)} at a time")
        close_sessions()  # no evaluator process holds a GPU while the profiler runs
        profiled = profile_programs(jobs, gpus, build_root, out, left)
        saved["profiler"] = profiled
        save()

    through: dict[str, Any] = {}
    tt = args.throughput_task
    if "throughput" in phases and tt in specs and left() > 90:
        spec = specs[tt]
        honest = [c for c in cands if c["task"] == tt and c["honest"] and c["expected"] != "ok-slow"]
        items = [(c["label"], c["program"]) for c in honest]
        items += [(f"{tt}__TP{i}", aa_program(spec, 100 + i)) for i in range(max(0, args.throughput_n - len(items)))]
        log(f"\nthroughput: {len(items)} correct {tt} programs, warm builds, warm sessions; 1 GPU, then {len(gpus)}")
        run_task(spec, [(f"{tt}__warm{i}", aa_program(spec, 900 + i)) for i in range(len(gpus))], settings,
                 out / "records_tp_warm", gpus, "tp_warm", [])
        for n in sorted({1, len(gpus)}):
            if left() < 45:
                log(f"  {n} GPU(s): skipped, budget spent")
                continue
            res, wall = run_task(spec, items, settings, out / f"records_tp_{n}gpu", gpus[:n], f"tp_{n}gpu", all_details)
            secs = sorted(r["eval_seconds"] for r in res.values())
            through[str(n)] = {"wall_s": wall, "programs": len(items), "ok": sum(r["status"] == "ok" for r in res.values()),
                               "per_candidate_s_median": secs[len(secs) // 2], "per_candidate_s_max": secs[-1],
                               "statuses": {k: r["status"] for k, r in res.items()},
                               "aa": {k: [r["speedup"], r["speedup_lo"], r["speedup_hi"]] for k, r in res.items() if "__TP" in k},
                               "seconds": {k: r["eval_seconds"] for k, r in res.items()}}
            saved["throughput"] = through
            save()

    kb: dict[str, dict] = {}
    if "kb_aa" in phases and args.kb_path:
        kb_cfg = {"suite": "kernelbench", "path": args.kb_path, "level": 1, "ids": [int(i) for i in args.kb_ids.split(",")],
                  "shape_scale": args.kb_shape_scale / (64 if args.dry else 1)}
        kb_specs = load_tasks(kb_cfg)
        log(f"\nkb_aa: {len(kb_specs)} KernelBench level-1 problems x {args.kb_copies} A/A programs, shape_scale {kb_cfg['shape_scale']:g}")
        for spec in kb_specs:
            if left() < 40:
                log(f"  {spec.task_id}: skipped, budget spent")
                continue
            items = [(f"{spec.task_id}__AA{i}", aa_program(spec, i)) for i in range(args.kb_copies)]
            try:
                res, _ = run_task(spec, items, settings, out / "records_kb", gpus, "kb_aa", all_details)
            except Exception as exc:  # noqa: BLE001 - one problem's failure is reported, the others still run
                log(f"  {spec.task_id}: failed: {type(exc).__name__}: {str(exc)[:300]}")
                kb[spec.task_id] = {"error": str(exc)[:1000]}
                continue
            kb.update(res)
            saved["kb_aa"] = kb
            save()
    close_sessions()

    # ------------------------------------------------------------------ tables
    log("\n== verdicts: status, speedup [95% interval], guard/flags | expected | match | s per candidate (build s)")
    rows = []
    for label, r in verdicts.items():
        c = next((c for c in cands if c["label"] == label), None)
        expected = c["expected"] if c else "ok-not-fast (A/A)"
        match = verdict_matches(expected.split(" ")[0], r)
        rows.append(match)
        why = r["guard"] or r["flags"] or (r["error"][:70].replace("\n", " ") if r["status"] != "ok" else "")
        log(f"  {label:<44} {r['status']:<13} {r['speedup']:7.3f} [{r['speedup_lo']:.3f}, {r['speedup_hi']:.3f}] {why[:40]:<40} | "
            f"{expected:<36} | {'yes' if match else 'NO'} | {r['eval_seconds']:.2f} s ({r.get('build_s', float('nan')):.1f})")
    if rows:
        log(f"expected verdicts met: {sum(rows)}/{len(rows)}")
        ok_secs = sorted(r["eval_seconds"] for r in verdicts.values() if r["status"] == "ok")
        if ok_secs:
            log(f"seconds per correct candidate (warm builds): median {ok_secs[len(ok_secs) // 2]:.2f}, max {ok_secs[-1]:.2f} "
                f"over {len(ok_secs)} programs; GPU session start per task: "
                f"{sorted({round(r.get('session_start_s', 0), 1) for r in verdicts.values() if r.get('session_start_s')})}")

    if profiled:
        log("\n== profiler comparison: evaluator's median per-call time vs CUPTI kernel-duration sum (median of 20 calls)")
        log(f"  {'program':<44} {'ours ms':>9} {'stream':>8} {'host':>7} {'CUPTI ms':>9} {'ours/CUPTI':>10}")
        comp = []
        for label, p in profiled.items():
            if "cupti_ms" not in p:
                log(f"  {label:<44} profiler failed: {p.get('error', '')[-200:]!r}")
                continue
            task = p["task"]
            if label.endswith("__reference"):
                recs = [r for r in verdicts.values() if r["task_id"] == task and r["status"] == "ok"]
                ours = float(sorted(r["ref_time_ms"] for r in recs)[len(recs) // 2]) if recs else math.nan
                stream = float(sorted(r.get("ref_stream_ms", math.nan) for r in recs)[len(recs) // 2]) if recs else math.nan
                host = float(sorted(r.get("ref_host_ms", math.nan) for r in recs)[len(recs) // 2]) if recs else math.nan
            else:
                r = verdicts[label]
                ours, stream, host = r["cand_time_ms"], r.get("cand_stream_ms", math.nan), r.get("cand_host_ms", math.nan)
            ratio = ours / p["cupti_ms"]
            comp.append({"label": label, "task": task, "ours_ms": ours, "cupti_ms": p["cupti_ms"], "ratio": ratio})
            log(f"  {label:<44} {ours:9.4f} {stream:8.4f} {host:7.4f} {p['cupti_ms']:9.4f} {ratio:10.3f}  (+{1000 * (ours - p['cupti_ms']):.1f} us)")
        empties = sorted(e for r in verdicts.values() for e in (r.get("empty_call_ms") or []) if e)
        if empties:
            log(f"  an empty call (START -> END, nothing between) in the same workers: median {1000 * empties[len(empties) // 2]:.1f} us "
                f"(range {1000 * empties[0]:.1f}-{1000 * empties[-1]:.1f} us; included in 'ours', not subtracted)")
        within = [abs(c["ratio"] - 1) <= 0.10 for c in comp]
        log(f"times within 10% of CUPTI: {sum(within)}/{len(within)}; worst ratio "
            f"{max(comp, key=lambda c: abs(c['ratio'] - 1))['ratio']:.3f}" if comp else "no comparison")
        refs = {c["task"]: c for c in comp if c["label"].endswith("__reference")}
        log(f"  {'candidate':<44} {'speedup ours':>12} {'CUPTI ratio':>11} {'ours/CUPTI':>10}")
        sp = []
        for c in comp:
            if c["label"].endswith("__reference") or c["task"] not in refs:
                continue
            r = verdicts[c["label"]]
            truth = refs[c["task"]]["cupti_ms"] / c["cupti_ms"]
            sp.append(abs(r["speedup"] / truth - 1) <= 0.10)
            log(f"  {c['label']:<44} {r['speedup']:12.3f} {truth:11.3f} {r['speedup'] / truth:10.3f}")
        log(f"speedups within 10% of the profiler's ratio: {sum(sp)}/{len(sp)}")
        saved["profiler_comparison"] = comp

    if through:
        log("\n== throughput (warm builds and sessions, fresh verdict cache)")
        base = through.get("1")
        for n, t in sorted(through.items()):
            ratio = f", {base['wall_s'] / t['wall_s']:.2f}x the 1-GPU throughput ({base['wall_s'] / t['wall_s'] / int(n):.2f} x N)" if base and n != "1" else ""
            log(f"  {n} GPU(s): {t['programs']} programs ({t['ok']} ok) in {t['wall_s']:.1f} s = {t['programs'] / t['wall_s']:.2f} programs/s; "
                f"per candidate median {t['per_candidate_s_median']:.2f} s, max {t['per_candidate_s_max']:.2f} s{ratio}")
            slow = sorted(t["seconds"].items(), key=lambda kv: -kv[1])[:3]
            log(f"    slowest: " + ", ".join(f"{k.split('__', 1)[1]} {v:.2f} s" for k, v in slow))
            aa = list(t["aa"].values())
            log(f"    its A/A programs: interval above 1 in {sum(lo > 1 for _, lo, _ in aa)}/{len(aa)}, below 1 in "
                f"{sum(hi < 1 for _, _, hi in aa)}/{len(aa)}; speedups {min(a[0] for a in aa):.3f}-{max(a[0] for a in aa):.3f}" if aa else "")

    if kb:
        aa = [r for r in kb.values() if "status" in r]
        ok = [r for r in aa if r["status"] == "ok"]
        above = [r for r in ok if r["speedup_lo"] > 1]
        below = [r for r in ok if r["speedup_hi"] < 1]
        log(f"\n== KernelBench level-1 A/A: {len(aa)} programs on {len({r['task_id'] for r in aa})} problems, {len(ok)} ok")
        for r in aa:
            log(f"  {r['label']:<24} {r['status']:<9} {r['speedup']:.4f} [{r['speedup_lo']:.4f}, {r['speedup_hi']:.4f}] "
                f"ref/cand {r['ref_time_ms']:.4f}/{r['cand_time_ms']:.4f} ms {r['flags']} {r['error'][:80]}")
        if ok:
            logs = [math.log(r["speedup"]) for r in ok]
            mean = sum(logs) / len(logs)
            sd = (sum((x - mean) ** 2 for x in logs) / len(logs)) ** 0.5
            log(f"A/A interval above 1: {len(above)}/{len(ok)} ({100 * len(above) / len(ok):.1f}%), below 1: {len(below)}/{len(ok)}; "
                f"log-speedup mean {mean:+.4f} sd {sd:.4f}; max |speedup-1| {max(abs(r['speedup'] - 1) for r in ok):.4f}")

    chk = check_windows(all_details)
    log(f"\ntimed-call windows per physical GPU: {chk['calls_per_gpu']}; overlapping on one GPU: {chk['same_gpu_overlaps']}")
    saved["windows"] = chk
    save()
    log(f"total {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
