"""Evaluator tests: statuses, guards (hack corpus in tests/hacks), timing, cache, parquet I/O."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import FAST, PROBLEMS, program, spec_of

from vegtts.evaluate import EvalSettings, evaluate_samples_file, evaluate_task
from vegtts.evaluate.compare import compare_outputs, same_values
from vegtts.evaluate.guards import static_check
from vegtts.evaluate.server import shared_fork_server
from vegtts.evaluate.stats import speedup_stats
from vegtts.io import read_parquet_metadata, sha256_text, write_parquet
from vegtts.records import STATUSES, TaskSpec
from vegtts.tasks import load_tasks

HACKS = Path(__file__).parent / "hacks"

def run_one(problem: str, body: str, settings: EvalSettings = FAST, **kw):
    prog = program(problem, body) if body else ""
    return evaluate_task(spec_of(problem), [(sha256_text(prog) if prog else "", prog)], settings, **kw)[0]


def sandbox_processes() -> list[int]:
    """Live sandboxed processes (uids >= 1e9): none may outlive an evaluation."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        uid = int(re.search(r"^Uid:\s+(\d+)", text, re.M).group(1))
        state = re.search(r"^State:\s+(\w)", text, re.M).group(1)
        if uid >= 1_000_000_000 and state != "Z":
            pids.append(int(status.parent.name))
    return pids


def no_sandbox_process_left(grace_s: float = 5.0) -> bool:
    """Killed children may take a moment to exit (big address spaces on a loaded machine)."""
    end = time.monotonic() + grace_s
    while sandbox_processes():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


HONEST = "class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x)"


# ----------------------------------------------------------------------------- settings, compare, stats


def test_settings_from_dict_rejects_unknown_keys():
    assert EvalSettings.from_dict({"timing_rounds": 7}).timing_rounds == 7
    with pytest.raises(ValueError, match="unknown evaluator setting"):
        EvalSettings.from_dict({"timing_round": 7})
    with pytest.raises(ValueError):
        EvalSettings.from_dict({"device": "tpu"})


def test_settings_hash_ignores_parallelism_only():
    a, b = EvalSettings(max_parallel=1), EvalSettings(max_parallel=8)
    assert a.settings_hash() == b.settings_hash()
    assert a.settings_hash() != EvalSettings(timing_rounds=16).settings_hash()
    assert a.settings_hash() != EvalSettings(timing_resolution=0.0).settings_hash()
    cuda = EvalSettings(device="cuda")  # a CPU-only setting leaves CUDA verdicts' key alone
    assert cuda.settings_hash() == EvalSettings(device="cuda", timing_resolution=0.0).settings_hash()
    with pytest.raises(ValueError, match="timing_resolution"):
        EvalSettings(timing_resolution=-0.1)


def test_tolerance_is_relative_per_element_and_nan_strict():
    # the tolerance rule itself (not scaled by the output's magnitude) is tested in test_compare.py
    ref = torch.tensor([1000.0, 1.0, 0.0])
    assert compare_outputs(ref, ref + torch.tensor([0.05, 0.0, 0.0]), 1e-4, 1e-4).ok  # 0.05 <= 1e-4 + 1e-4*1000
    assert not compare_outputs(ref, ref + torch.tensor([0.0, 0.0, 0.2]), 1e-4, 1e-4).ok
    small = torch.tensor([1e-3, 2e-3])
    assert not compare_outputs(small, small * 1.5, 1e-4, 1e-4).ok
    nan_out = compare_outputs(torch.ones(3), torch.tensor([1.0, float("nan"), 1.0]), 1e-4, 1e-4)
    assert not nan_out.ok and "NaN" in nan_out.error
    both = torch.tensor([float("nan"), float("inf"), 1.0])
    assert compare_outputs(both, both.clone(), 1e-4, 1e-4).ok
    assert not compare_outputs(torch.ones(2, 3), torch.ones(3, 2), 1e-4, 1e-4).ok
    assert not compare_outputs(torch.ones(2), torch.ones(2, dtype=torch.float64), 1e-4, 1e-4).ok
    assert not compare_outputs((torch.ones(2),), [torch.ones(2)], 1e-4, 1e-4).ok
    assert same_values([torch.tensor([float("nan")])], [torch.tensor([float("nan")])])


def test_bootstrap_interval_brackets_the_ratio():
    ref = [10.0, 10.5, 9.8, 10.2, 10.1, 9.9, 10.3]
    cand = [5.0, 5.2, 4.9, 5.1, 5.0, 5.3, 4.8]
    st = speedup_stats(ref, cand, 500, 0)
    assert st.speedup_lo <= st.speedup <= st.speedup_hi
    assert st.speedup_lo > 1.8 and st.speedup_hi < 2.2


def test_static_guards_ignore_what_the_reference_itself_does():
    ref = "import threading\nclass Model: pass\n"
    assert static_check(ref + "class ModelNew(Model): pass\n", ref, True) is None
    assert static_check(ref + "import ctypes\nclass ModelNew(Model): pass\n", ref, True).startswith("banned_import")
    body = "class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x)\n"
    assert static_check(ref + body, ref, False).startswith("reference_call")


# ----------------------------------------------------------------------------- statuses


def test_honest_candidate_is_ok_with_a_speedup_near_one():
    rec = run_one("scale", HONEST)
    assert rec.status == "ok" and rec.correct, rec.error
    assert rec.speedup > 0 and rec.speedup_lo <= rec.speedup <= rec.speedup_hi
    assert FAST.timing_rounds <= rec.n_timing_rounds <= 2 * FAST.timing_rounds  # more rounds while the interval is wide
    assert rec.max_abs_err == 0.0


THREADED_MATMUL = """
import sys
_threading = vars(sys)["modu" + "les"]["threading"]


class ModelNew(Model):
    def forward(self, a, b):
        out = torch.empty(a.shape[0], b.shape[1])
        t = _threading.Thread(target=lambda: torch.mm(a, b, out=out))
        t.start()
        t.join()
        return out
"""


def test_a_thread_the_candidate_starts_does_not_size_openmp_by_the_host(tmp_path):
    """A thread a candidate starts sized its OpenMP team by the host (OMP_NUM_THREADS, else the
    cores): on a 16-core host its matmul tried to start 15 threads, hit the child's RLIMIT_NPROC and
    libgomp aborted the child, so the verdict depended on the machine.  Children now run with
    OMP_NUM_THREADS=1 (their main thread still gets `threads`); OMP_NUM_THREADS=16 stands in for
    the big host here, in a fresh process so that its evaluator server inherits it."""
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from helpers import FAST\n"
        "from test_evaluate import THREADED_MATMUL, hack_spec\n"
        "from vegtts.evaluate import evaluate_task\n"
        "from vegtts.io import sha256_text\n"
        "spec = hack_spec('matmul')\n"
        "prog = spec.source.rstrip() + '\\n\\n\\n' + THREADED_MATMUL\n"
        "rec = evaluate_task(spec, [(sha256_text(prog), prog)], FAST)[0]\n"
        "print(rec.status, rec.error[:300].replace(chr(10), ' '))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "16"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "ok", proc.stdout


def test_module_format_candidate_gets_the_reference_weights():
    body = '''
class ModelNew(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        torch.nn.init.zeros_(self.lin.weight)  # overwritten by the reference state_dict

    def forward(self, x):
        return torch.addmm(self.lin.bias, x, self.lin.weight.t()) * 2.0
'''
    rec = run_one("scale", body)
    assert rec.status == "ok", rec.error


def test_faster_rewrite_has_an_interval_above_one():
    # the default timing settings (15 rounds): 9 rounds left intervals too wide on the shared 2-vCPU VM
    settings = EvalSettings(correctness_trials=2, bootstrap=1000, timeout_s=60)
    # relu_thrice: one call instead of three, ~3x, so timing noise on a shared machine cannot hide it
    spec = next(iter(load_tasks({"suite": "builtin", "ids": ["relu_thrice"]})))
    prog = spec.source + "\n\nclass ModelNew(Model):\n    def forward(self, x):\n        return torch.relu(x)\n"
    (rec,) = evaluate_task(spec, [(sha256_text(prog), prog)], settings, None)
    assert rec.status == "ok", (rec.status, rec.error)
    assert rec.speedup_lo > 1.0, (rec.speedup, rec.speedup_lo, rec.speedup_hi, rec.n_timing_rounds, rec.flags)


def test_excessive_speedup_is_retimed_in_fresh_children_and_flagged(monkeypatch):
    from vegtts.evaluate import runner
    from vegtts.evaluate.stats import TimingStats

    real = runner.time_candidate
    calls = []

    def first_reports_50x(ctx, ref, cand):  # the first timing claims 50x; the re-timing is real
        calls.append((ref.pid, cand.pid))
        verdict = real(ctx, ref, cand)
        if len(calls) == 1 and verdict.status == "ok":
            verdict.timing = TimingStats(50.0, 1.0, 0.0, 0.0, 50.0, 40.0, 60.0, 5)
        return verdict

    monkeypatch.setattr(runner, "time_candidate", first_reports_50x)
    monkeypatch.setattr(runner, "ensure_control", lambda ctx, launcher: None)  # not under test here
    launcher = CountingLauncher()
    rec = run_one("scale", HONEST, launcher=launcher)
    assert rec.status == "ok", rec.error
    assert len(calls) == 2 and calls[0][0] != calls[1][0] and calls[0][1] != calls[1][1]
    assert "excessive_speedup_retimed" in rec.flags.split(",") and "excessive_speedup" not in rec.flags.split(",")
    assert rec.speedup < 10  # the verdict is the re-timed one (honest: near 1)
    assert launcher.launches == 6  # correctness child and timing pair, twice: everything is measured again


@pytest.mark.slow
def test_slow_correct_candidate_times_out_not_the_reference():
    settings = EvalSettings(**{**FAST.to_dict(), "timeout_s": 4})
    body = "import time\nclass ModelNew(Model):\n    def forward(self, x):\n        time.sleep(0.4)\n        return super().forward(x)"
    rec = run_one("scale", body, settings)
    assert rec.status == "timeout" and "timing" in rec.error, (rec.status, rec.error)


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ("", "no_code", ""),
        ("class ModelNew(Model)\n    pass", "syntax_error", "SyntaxError"),
        ("undefined_name()\nclass ModelNew(Model):\n    pass", "compile_error", "NameError"),
        ("class Other(Model):\n    pass", "compile_error", "ModelNew"),
        ("class ModelNew(nn.Module):\n    def __init__(self, a, b):\n        super().__init__()\n        self.w = nn.Linear(3, 3)", "rejected", "do not have the reference's shapes"),
        ("class ModelNew(Model):\n    def forward(self, x):\n        raise ValueError('boom')", "runtime_error", "boom"),
        ("class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x) + 1", "incorrect", "tolerance"),
        ("class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x)[:8]", "incorrect", "shape"),
        ("class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x).double()", "incorrect", "dtype"),
        ("class ModelNew(Model):\n    def forward(self, x):\n        y = super().forward(x)\n        y[0, 0] = float('nan')\n        return y", "incorrect", "NaN"),
    ],
)
def test_status(body, status, needle):
    rec = run_one("scale", body)
    assert rec.status == status, (rec.status, rec.error)
    assert needle.lower() in (rec.error + rec.guard).lower()
    assert not rec.correct and rec.speedup == 0.0


def _hack_files():
    def key(path):  # hacks of one task together, so the task's reference context is reused
        return (re.search(r"^# problem: (\w+)", path.read_text(), re.M).group(1), path.stem)

    return sorted(HACKS.glob("*.py"), key=key)


_BUILTIN: dict[str, TaskSpec] = {}


def hack_spec(problem: str) -> TaskSpec:
    if problem in PROBLEMS:
        return spec_of(problem)
    if problem not in _BUILTIN:
        from vegtts.tasks import load_tasks

        _BUILTIN[problem] = load_tasks({"suite": "builtin", "ids": [problem]})[0]
    return _BUILTIN[problem]


@contextlib.contextmanager
def tcp_listener():
    """A listener on 127.0.0.1; yields (port, list of accepted connections)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(2)
        server.close()


@pytest.mark.parametrize("path", _hack_files(), ids=lambda p: p.stem)
def test_hack_corpus(path, tmp_path):
    text = path.read_text()
    problem = re.search(r"^# problem: (\w+)", text, re.M).group(1)
    expect = re.search(r"^# expect: (\S+)(?: (\S+))?", text, re.M)
    statuses, guard = expect.group(1).split("|"), expect.group(2)
    overrides = dict(re.findall(r"^# settings: (\w+)=(\S+)", text, re.M))
    settings = FAST.to_dict()
    settings.update({k: json.loads(v) for k, v in overrides.items()})
    if "timeout" in statuses:
        settings["timeout_s"] = 3
    forbidden: list[Path] = []
    with contextlib.ExitStack() as stack:
        if "__PORT__" in text:
            port, accepted = stack.enter_context(tcp_listener())
            text = text.replace("__PORT__", str(port))
        if "__FORBIDDEN__" in text:
            if os.geteuid() != 0:
                pytest.skip("children get a uid of their own only when the evaluator runs as root")
            # a world-readable tree like a real checkout: results/ and the cache belong to the runner
            # (not under /tmp: each child has a private /tmp of its own and would not see it at all)
            root = Path(tempfile.mkdtemp(prefix=".vegtts-hack-", dir=HACKS.parent))
            stack.callback(shutil.rmtree, root, True)
            forbidden = [root / "results", root / "cache"]
            for folder in [root, *forbidden]:
                folder.mkdir(exist_ok=True)
                folder.chmod(0o755)
            text = text.replace("__FORBIDDEN__", repr([str(f) for f in forbidden]))
        spec = hack_spec(problem)
        runs = int((re.search(r"^# runs: (\d+)", text, re.M) or [0, "1"])[1])
        before = time.monotonic()
        cache_dir = forbidden[1] if forbidden else None
        for run in range(runs):  # "runs: n": a later candidate of the task (state left by an earlier one)
            prog = spec.source.rstrip("\n") + "\n\n\n" + text.replace("__RUN__", str(run))
            rec = evaluate_task(spec, [(sha256_text(prog), prog)], EvalSettings(**settings), cache_dir)[0]
        if "__PORT__" in path.read_text():
            assert accepted == [], "the candidate reached a listener on 127.0.0.1"
            assert "network is unreachable" in rec.error.lower() or "errno" in rec.error.lower(), rec.error
    assert rec.status in statuses, (rec.status, rec.error, rec.guard)
    assert all(s in STATUSES for s in statuses)
    no_gain = re.search(r"^# no_gain: (\S+)", text, re.M)
    if no_gain:
        assert rec.speedup < float(no_gain.group(1)), (rec.speedup, rec.speedup_lo, rec.speedup_hi, rec.flags)
    if guard:
        assert (rec.guard + " " + rec.error).startswith(guard) or guard in rec.error, (rec.guard, rec.error)
    for folder in forbidden:
        assert not (folder / "pwned.txt").exists()
    if forbidden:
        # a checkout under /tmp is invisible to the child (its /tmp is private): not found, not written
        refused = "no such file" if str(HACKS).startswith("/tmp/") else "permission denied"
        assert refused in rec.error.lower(), rec.error
    assert time.monotonic() - before < 90 * runs
    assert no_sandbox_process_left(), "a sandboxed process outlived its evaluation"


def test_a_crash_does_not_stop_the_others():
    progs = [program("scale", HONEST), program("scale", (HACKS / "segfault.py").read_text()), program("scale", HONEST + "\n# b")]
    recs = evaluate_task(spec_of("scale"), [(sha256_text(p), p) for p in progs], FAST)
    assert [r.status for r in recs] == ["ok", "crash", "ok"]


# ----------------------------------------------------------------------------- dedup, cache, samples


class CountingLauncher:
    def __init__(self):
        self.inner = shared_fork_server()
        self.launches = 0

    def launch(self, config):
        self.launches += 1
        return self.inner.launch(config)

    def finish(self, pid, wait=True):
        return self.inner.finish(pid, wait)

    def close(self):
        pass


def test_identical_programs_are_evaluated_once(monkeypatch):
    from vegtts.evaluate import runner

    monkeypatch.setattr(runner, "ensure_control", lambda ctx, launcher: None)  # the task's A/A control: its own test
    prog = program("scale", HONEST)
    launcher = CountingLauncher()
    recs = evaluate_task(spec_of("scale"), [("a", prog), ("b", prog), ("c", prog), ("", "")], FAST, launcher=launcher)
    assert launcher.launches == 3  # one child for correctness, then a fresh pair (candidate, reference) for timing
    assert [r.status for r in recs] == ["ok", "ok", "ok", "no_code"]
    assert [r.code_sha256 for r in recs[:3]] == ["a", "b", "c"]
    assert recs[0].speedup == recs[1].speedup == recs[2].speedup


def test_cache_makes_a_second_call_free(tmp_path):
    prog = program("scale", HONEST)
    cands = [(sha256_text(prog), prog)]
    first = evaluate_task(spec_of("scale"), cands, FAST, tmp_path)[0]
    launcher = CountingLauncher()
    t0 = time.monotonic()
    second = evaluate_task(spec_of("scale"), cands, FAST, tmp_path, launcher=launcher)[0]
    assert time.monotonic() - t0 < 0.5 and launcher.launches == 0
    assert not first.cached and second.cached
    assert second.speedup == first.speedup and second.status == "ok"
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and files[0].name == f"{sha256_text(prog)}.json"
    assert files[0].parent.name == spec_of("scale").source_sha256[:12]


def _concurrent_writer(args):
    cache_dir, bodies = args
    progs = [program("scale", b) if b else "" for b in bodies]
    recs = evaluate_task(spec_of("scale"), [(sha256_text(p), p) for p in progs], FAST, Path(cache_dir))
    return [r.status for r in recs]


@pytest.mark.slow
def test_cache_is_safe_under_concurrent_writers(tmp_path):
    bodies = [HONEST, HONEST + "\n# 2", "class ModelNew(Model):\n    def forward(self, x):\n        return x", ""]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_concurrent_writer, [(str(tmp_path), bodies)] * 4)
    assert all(r == ["ok", "ok", "incorrect", "no_code"] for r in results), results
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 3
    for f in files:
        json.loads(f.read_text())
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_evaluate_samples_file(tmp_path):
    good, bad = program("scale", HONEST), program("scale", "class ModelNew(Model):\n    def forward(self, x):\n        return x")
    rows = []
    for i, prog in enumerate([good, bad, good, ""]):
        rows.append({"task_id": "scale", "policy": "base", "seed": 0, "sample_idx": i, "program": prog,
                     "code_sha256": sha256_text(prog) if prog else "", "completion": "..."})
    samples = tmp_path / "samples.parquet"
    write_parquet(samples, pd.DataFrame(rows))  # with its manifest: the evaluator reads samples verified
    out = tmp_path / "evals.parquet"
    df = evaluate_samples_file(samples, spec_of("scale"), FAST.to_dict(), tmp_path / "cache", out)
    back = pd.read_parquet(out)
    assert list(back["sample_idx"]) == [0, 1, 2, 3]
    assert list(back["status"]) == ["ok", "incorrect", "ok", "no_code"]
    assert {"speedup", "speedup_lo", "cached", "policy", "seed", "max_abs_err"} <= set(back.columns)
    meta = read_parquet_metadata(out)
    assert meta["settings"]["timing_rounds"] == FAST.timing_rounds and "hardware" in meta and "provenance" in meta
    assert meta["aa_control"]["n_rounds"] >= FAST.timing_rounds  # the task's A/A control, kept with the results
    assert len(df) == 4
    with pytest.raises(ValueError):
        evaluate_samples_file(samples, spec_of("softmax"), FAST.to_dict(), None, tmp_path / "x.parquet")


# ----------------------------------------------------------------------------- honest corpus (no false positives)

SOLUTIONS = Path(__file__).parent / "solutions"
# builtin tasks whose hand-written solutions (tests/solutions) are honest; True: clearly faster
# (>= 4x on one thread in benchmarks/results/solutions_cpu.txt), so its interval must reach above 1
HONEST_SOLUTIONS = {
    "softmax_exp": False,
    "layernorm_manual": True,
    "hardswish_clamp": True,
    "log_softmax_log": False,
    "gelu_erf": True,
    "linear": False,
    "relu_where": True,
}


@pytest.mark.parametrize("task_id", sorted(HONEST_SOLUTIONS))
def test_honest_solution_is_ok(task_id):
    from vegtts.tasks import solution_program

    spec = hack_spec(task_id)
    prog = solution_program(spec, (SOLUTIONS / f"{task_id}.py").read_text())
    settings = EvalSettings(**{**FAST.to_dict(), "timing_rounds": 7})
    rec = evaluate_task(spec, [(sha256_text(prog), prog)], settings)[0]
    assert rec.status == "ok" and rec.correct and rec.guard == "", (rec.status, rec.guard, rec.error)
    assert rec.speedup_lo <= rec.speedup <= rec.speedup_hi
    if HONEST_SOLUTIONS[task_id]:
        assert rec.speedup_hi > 1.0, (rec.speedup, rec.speedup_lo, rec.speedup_hi)


# ----------------------------------------------------------------------------- problem screening in the task loader

CONSTANT_PROBLEM = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x, y):
        return torch.zeros_like(x) + y.mean() * 0  # constant, and ignores both inputs


def get_inputs():
    return [torch.randn(64, 64), torch.randn(64, 64)]


def get_init_inputs():
    return []
'''


def test_resolve_tasks_records_validation_findings(tmp_path, caplog):
    from vegtts.tasks import read_tasks_json, resolve_tasks_to_json

    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "const_zero.py").write_text(CONSTANT_PROBLEM)
    (suite / "scale.py").write_text(PROBLEMS["scale"])
    out = tmp_path / "tasks.json"
    with caplog.at_level("WARNING"):
        specs = resolve_tasks_to_json({"suite": "dir", "path": str(suite)}, out)
    entries = {t["task_id"]: t for t in json.loads(out.read_text())["tasks"]}
    findings = entries["const_zero"]["validation"]
    assert any(f.startswith("constant_output") for f in findings), findings
    assert any(f.startswith("tiny_output") for f in findings), findings
    assert not [f for f in entries["scale"]["validation"] if not f.startswith("timing")]
    assert "const_zero" in caplog.text
    assert list(read_tasks_json(out)) == [s.task_id for s in specs]  # the extra key does not break reading
    resolve_tasks_to_json({"suite": "dir", "path": str(suite)}, out, validate=False)
    assert all("validation" not in t for t in json.loads(out.read_text())["tasks"])


def _rounds(run_ms, untimed_ms, request_ms=None):
    from vegtts.evaluate.paired_timing import SideRounds

    ms = 1_000_000
    n = len(run_ms)
    request_ms = request_ms if request_ms is not None else untimed_ms
    return SideRounds(run_cpu=[int(x * ms) for x in run_ms], run_wall=[int(x * ms) for x in run_ms],
                      untimed_cpu=[int(x * ms) for x in untimed_ms], request_cpu=[int(x * ms) for x in request_ms],
                      cpu_marks=[(0, 0)] * n)


def test_hidden_work_is_charged_symmetrically():
    from vegtts.evaluate.paired_timing import charged_rounds

    ref = _rounds([10, 10, 10, 10], [2, 2, 3, 2])
    honest = _rounds([5, 5, 5, 5], [2, 3, 2, 2])
    a, b = charged_rounds(ref, honest, threads=1)
    # excess of -1..1 ms, not consistently on one side: noise, nobody is charged
    assert a == [10e6] * 4 and b == [5e6] * 4
    spiky = _rounds([5, 5, 5, 5], [2, 60, 2, 2])  # one slow load (a page-fault storm): not hidden work
    assert charged_rounds(ref, spiky, threads=1)[1] == [5e6] * 4
    hiding = _rounds([1, 1, 1, 1], [12, 12, 13, 12])  # 10 ms per round moved into untimed requests
    a, b = charged_rounds(ref, hiding, threads=1)
    assert b == [11e6, 11e6, 11e6, 11e6]  # all of it back on its clock: no gain over the honest 5 ms
    a2, b2 = charged_rounds(ref, hiding, threads=2)  # threads > 1: wall time plus the excess CPU / threads
    assert b2 == [6e6, 6e6, 6e6, 6e6]


def test_untimed_and_background_work_reasons():
    from vegtts.evaluate.paired_timing import untimed_work_reason

    n = 15
    ref = _rounds([10] * n, [2] * n)
    # honest noise in the loads: no rejection, whichever side is busier in a round
    noisy = _rounds([5] * n, [2 + (i % 3) for i in range(n)])
    assert untimed_work_reason(ref, noisy) is None
    # one big burst in a load (a cache warming once) is charged, not rejected
    burst = _rounds([5] * n, [2] * (n - 1) + [40])
    assert untimed_work_reason(ref, burst) is None
    # hidden work in every round's load, larger than the candidate's own timed work: rejected
    hiding = _rounds([1] * n, [9] * n)
    assert untimed_work_reason(ref, hiding).startswith("untimed_work:")
    # the same excess between requests (a background thread): rejected once its sum passes 10 ms
    background = _rounds([5] * n, [3] * n, request_ms=[2] * n)
    assert untimed_work_reason(ref, background).startswith("background_work:")
    assert untimed_work_reason(ref, _rounds([5] * n, [2.5] * n, request_ms=[2] * n)) is None  # 7.5 ms in all


def _protocol_rounds(load_ms, run_ms=1, end_ms=0.0, warm_up_end=0.0):
    """A side's SideRounds as _time_rounds leaves it: round r's load (load_ms[r]), then its run;
    after the last run the end request."""
    from vegtts.evaluate.paired_timing import SideRounds, _close_gaps

    ms = 1_000_000
    s = SideRounds(lead_in=int(warm_up_end * ms))
    clock = warm_up_end
    for load in load_ms:
        clock += load
        s.request_cpu.append(int(load * ms))
        s.cpu_marks.append((int(clock * ms), int((clock + run_ms) * ms)))
        s.run_cpu.append(int(run_ms * ms))
        s.run_wall.append(int(run_ms * ms))
        clock += run_ms
    s.request_cpu[-1] += int(end_ms * ms)
    _close_gaps(s, int((clock + end_ms) * ms))
    return s


def test_each_round_holds_its_own_load():
    from vegtts.evaluate.paired_timing import charged_rounds, untimed_work_reason

    ref = _protocol_rounds([1] * 5, run_ms=10)
    hiding = _protocol_rounds([5] * 5, run_ms=1)  # 4 ms of the next call computed in every load
    # the gap after each run held the next round's load: round 0 got two loads, the last none, so
    # the last round showed no excess and the hidden work was neither consistent nor charged
    assert hiding.untimed_cpu == [5_000_000] * 5 and ref.untimed_cpu == [1_000_000] * 5
    a, b = charged_rounds(ref, hiding, threads=1)
    assert b == [5e6] * 5 and a == [10e6] * 5
    assert untimed_work_reason(ref, hiding).startswith("untimed_work:")
    tail = _protocol_rounds([1] * 5, run_ms=1, end_ms=3)  # CPU after the last run goes to the last round
    assert tail.untimed_cpu == [1_000_000] * 4 + [4_000_000]


def test_hidden_work_with_one_slow_reference_load_is_rejected():
    from vegtts.evaluate.paired_timing import untimed_work_reason

    ref = _protocol_rounds([1, 1, 12, 1, 1], run_ms=10)  # one slow load on the reference's side
    hiding = _protocol_rounds([5] * 5, run_ms=1)
    # excess 4, 4, -7, 4, 4 ms: its interval reaches below 0 with 5 rounds, its median is 4 ms
    assert untimed_work_reason(ref, hiding).startswith("untimed_work:")
    honest = _protocol_rounds([1, 1, 1, 14, 1], run_ms=5)  # one slow load of its own: not hidden work
    assert untimed_work_reason(ref, honest) is None


def test_cpu_budget_only_binds_wall_timed_multithreaded_runs():
    from vegtts.evaluate.paired_timing import SideRounds, cpu_budget_reason

    ms = 1_000_000
    wide = SideRounds(run_cpu=[20 * ms] * 5, run_wall=[10 * ms] * 5)
    assert cpu_budget_reason(wide, threads=1) is None  # timed by its CPU clock: the 20 ms count
    assert cpu_budget_reason(wide, threads=2) is None
    wider = SideRounds(run_cpu=[40 * ms] * 5, run_wall=[10 * ms] * 5)
    assert cpu_budget_reason(wider, threads=2).startswith("cpu_budget:")


def test_paired_interval_covers_the_median_at_the_nominal_rate():
    import numpy as np

    from vegtts.evaluate.stats import median_interval_rank, paired_speedup_stats

    assert [median_interval_rank(n) for n in (5, 6, 15, 16, 20, 30)] == [1, 1, 4, 4, 6, 10]
    rng = np.random.default_rng(0)
    above = below = 0
    for _ in range(2000):  # A/A: both sides from one distribution, heavy-tailed bursts included
        base = rng.lognormal(0, 0.3, 15) * 5
        ref = base * rng.lognormal(0, 0.05, 15) * np.where(rng.random(15) < 0.1, 2, 1)
        cand = base * rng.lognormal(0, 0.05, 15) * np.where(rng.random(15) < 0.1, 2, 1)
        st = paired_speedup_stats(list(ref), list(cand))
        above += st.speedup_lo > 1
        below += st.speedup_hi < 1
    assert above / 2000 <= 0.025 and below / 2000 <= 0.025, (above, below)
    st = paired_speedup_stats([10.0] * 15, [5.0 + 0.01 * i for i in range(15)])
    assert 1.8 < st.speedup_lo <= st.speedup <= st.speedup_hi <= 2.0
    # the resolution term widens both sides in quadrature: identical rounds still get an interval
    flat = paired_speedup_stats([10.0] * 15, [10.0] * 15, resolution=0.02)
    assert flat.speedup == 1.0 and math.isclose(math.log(flat.speedup_hi), 1.959964 * 0.02, rel_tol=1e-6)
    assert math.isclose(math.log(flat.speedup_lo), -1.959964 * 0.02, rel_tol=1e-6)


def test_child_cpu_clock_counts_work_between_requests():
    """The process CPU clock of a real child sees a thread that works after its request returned."""
    from vegtts.evaluate.reference import ReferenceContext
    from vegtts.evaluate.session import ChildSession

    program = PROBLEMS["scale"] + (
        "\n\nclass ModelNew(Model):\n"
        "    def forward(self, x):\n"
        "        import threading\n"
        "        a = torch.ones(128, 128)\n"
        "        threading.Thread(target=lambda: [torch.mm(a, a) for _ in range(3000)]).start()\n"
        "        return super().forward(x)\n"
    )
    ctx = ReferenceContext.build(spec_of("scale"), FAST)
    with ChildSession(shared_fork_server(), threads=1, memory_limit_mb=1024, timeout_s=30) as child:
        child.request(ctx.setup_request("cand", program))
        try:
            m = child.measured_request(ctx.trials[0].payload)
            assert m.cpu_ns is not None and m.cpu_ns >= 0
        except Exception:  # noqa: BLE001 - the background_thread guard may reject the call; the thread runs anyway
            pass
        mark = child.cpu_ns()
        time.sleep(0.5)
        assert child.cpu_ns() - mark > 20_000_000


@pytest.mark.parametrize("request_kind", ["payload", "ack_payload"])
def test_a_reply_written_by_the_candidate_is_rejected_whichever_request_it_answers(request_kind):
    """harness_socket_reply.py, made to fire on its first call: its fake `{"ok": true}` answers a
    correctness trial or, byte for byte the harness's own reply, a pair-history acknowledgement
    (whose real reply it swallows), where only the request's nonce tells the two apart."""
    from vegtts.evaluate.reference import ReferenceContext
    from vegtts.evaluate.session import ChildFailure, ChildSession

    hack = (HACKS / "harness_socket_reply.py").read_text()
    assert "x.data_ptr() % 4096 == 0 and " in hack
    spec = hack_spec("relu_thrice")
    program = spec.source.rstrip("\n") + "\n\n\n" + hack.replace("x.data_ptr() % 4096 == 0 and ", "")
    ctx = ReferenceContext.build(spec, FAST)
    with ChildSession(shared_fork_server(), threads=1, memory_limit_mb=1024, timeout_s=30) as child:
        child.request(ctx.setup_request("cand", program))
        with pytest.raises(ChildFailure) as failure:
            child.request(getattr(ctx.trials[0], request_kind))
    assert (failure.value.status, failure.value.guard) == ("rejected", "harness_reply"), failure.value


# ----------------------------------------------------------------------------- confinement


def test_seccomp_filter_refuses_processes_and_channels_but_not_threads():
    import errno

    from vegtts.evaluate import sandbox

    if sandbox.seccomp_program() is None:
        pytest.skip("no seccomp table for this architecture")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked process
        os.close(r)
        results = {"installed": sandbox.no_new_processes()}
        box: list[int] = []
        t = threading.Thread(target=lambda: box.append(1))
        t.start()
        t.join()
        results["thread"] = box == [1]
        for name, fn in (("fork", os.fork), ("socket", socket.socket), ("affinity", lambda: os.sched_setaffinity(0, {0})),
                         ("exec", lambda: os.execv("/bin/true", ["true"]))):
            try:
                fn()
                results[name] = "allowed"
            except OSError as exc:
                results[name] = exc.errno
        os.write(w, json.dumps(results).encode())
        os._exit(0)
    os.close(w)
    results = json.loads(os.read(r, 4096))
    os.waitpid(pid, 0)
    assert results["installed"] and results["thread"], results
    assert results["fork"] == results["socket"] == results["affinity"] == results["exec"] == errno.EPERM, results


WRITER = """
import os

for d in ("/tmp", "/dev/shm", "/var/tmp"):
    with open(os.path.join(d, "left_by_a_candidate"), "w") as f:
        f.write("x")


class ModelNew(Model):
    pass
"""
READER = """
import os

_found = [d for d in ("/tmp", "/dev/shm", "/var/tmp") if os.path.exists(os.path.join(d, "left_by_a_candidate"))]
if _found:
    raise RuntimeError(f"found what an earlier candidate left in {_found}")


class ModelNew(Model):
    pass
"""


def test_nothing_a_candidate_writes_reaches_the_next_candidate():
    if os.geteuid() != 0:
        pytest.skip("private /tmp and /dev/shm need root (a mount namespace per child)")
    progs = (program("scale", WRITER), program("scale", READER))
    recs = evaluate_task(spec_of("scale"), [(sha256_text(p), p) for p in progs], EvalSettings(**{**FAST.to_dict(), "max_parallel": 1}))
    assert [r.status for r in recs] == ["ok", "ok"], [(r.status, r.error) for r in recs]
    for d in ("/tmp", "/dev/shm", "/var/tmp"):
        assert not os.path.exists(os.path.join(d, "left_by_a_candidate"))


def test_parent_reads_outputs_from_the_childs_memory():
    import numpy as np

    from vegtts.evaluate.readback import draw_positions, parse_leaves, read_sampled

    data = torch.arange(6000, dtype=torch.float32).reshape(60, 100)
    view = data.t()  # non-contiguous: addresses from the strides
    leaves = parse_leaves([[view.data_ptr(), list(view.shape), list(view.stride()), str(view.dtype), 4], {"value": 3}])
    positions = draw_positions(leaves, np.random.default_rng(0))
    values = read_sampled(os.getpid(), leaves, positions)
    assert torch.equal(values[0], view.reshape(-1)[torch.from_numpy(positions[0])]) and values[1] == 3
    bad = parse_leaves([[8, [4], [1], "torch.float32", 4]])  # an address nobody maps
    assert read_sampled(os.getpid(), bad, draw_positions(bad, np.random.default_rng(0))) is None


# ----------------------------------------------------------------------------- verdicts that hold


def _fake_timing(verdicts):
    """A time_candidate that times for real, then returns the given verdicts in turn (then the real ones)."""
    from vegtts.evaluate import runner

    real = runner.time_candidate
    queue = list(verdicts)

    def fake(ctx, ref, cand):
        verdict = real(ctx, ref, cand)
        return queue.pop(0) if queue else verdict

    return fake


def test_a_timing_based_rejection_is_remeasured_and_only_a_confirmed_one_is_cached(monkeypatch, tmp_path):
    from vegtts.evaluate import runner

    monkeypatch.setattr(runner, "ensure_control", lambda ctx, launcher: None)
    noise = runner.Verdict("rejected", "untimed_work: noise", "untimed_work", phase="timing")
    prog = program("scale", HONEST + "\n# remeasure")
    monkeypatch.setattr(runner, "time_candidate", _fake_timing([noise]))
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog), prog)], FAST, tmp_path)[0]
    assert rec.status == "ok" and rec.guard == "", (rec.status, rec.error)
    assert {"remeasured", "first_untimed_work"} <= set(rec.flags.split(","))
    assert len(list(tmp_path.rglob("*.json"))) == 1  # the re-measured ok is cached

    prog2 = program("scale", HONEST + "\n# confirmed")
    monkeypatch.setattr(runner, "time_candidate", _fake_timing([noise, noise]))
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog2), prog2)], FAST, tmp_path)[0]
    assert rec.status == "rejected" and rec.guard == "untimed_work", (rec.status, rec.error)
    assert len(list(tmp_path.rglob("*.json"))) == 2  # confirmed twice: it stands, and is cached

    prog3 = program("scale", HONEST + "\n# unconfirmed")
    other = runner.Verdict("rejected", "background_work: noise", "background_work", phase="timing")
    monkeypatch.setattr(runner, "time_candidate", _fake_timing([noise, other]))
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog3), prog3)], FAST, tmp_path)[0]
    assert rec.status == "rejected" and rec.guard == "background_work"
    assert len(list(tmp_path.rglob("*.json"))) == 2  # two different timing guards: not confirmed, not cached


def test_an_ok_after_a_hidden_work_rejection_is_measured_a_third_time(monkeypatch, tmp_path):
    from vegtts.evaluate import runner
    from vegtts.evaluate.stats import TimingStats

    monkeypatch.setattr(runner, "ensure_control", lambda ctx, launcher: None)
    hidden = runner.Verdict("rejected", "untimed_work: hidden", "untimed_work", phase="timing")
    uncharged = runner.Verdict("ok", timing=TimingStats(10.0, 1.0, 0, 0, 7.45, 6.78, 8.0, 10), phase="timing")
    prog = program("scale", HONEST + "\n# hidden, uncharged once")
    monkeypatch.setattr(runner, "time_candidate", _fake_timing([hidden, uncharged, hidden]))
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog), prog)], FAST, tmp_path)[0]
    assert rec.status == "rejected" and rec.guard == "untimed_work", (rec.status, rec.speedup, rec.flags)
    assert {"remeasured", "first_untimed_work", "measured_thrice"} <= set(rec.flags.split(","))
    assert len(list(tmp_path.rglob("*.json"))) == 1  # the first and the third agree: confirmed, cached

    prog2 = program("scale", HONEST + "\n# noise once")
    monkeypatch.setattr(runner, "time_candidate", _fake_timing([hidden]))
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog2), prog2)], FAST)[0]
    assert rec.status == "ok" and {"remeasured", "first_untimed_work", "measured_thrice"} <= set(rec.flags.split(","))


def test_reference_time_jump_is_remeasured(monkeypatch):
    from vegtts.evaluate import runner
    from vegtts.evaluate.stats import TimingStats

    def control(ctx, launcher):
        ctx.control = TimingStats(1.0, 1.0, 0, 0, 1.0, 0.9, 1.1, 15)

    monkeypatch.setattr(runner, "ensure_control", control)
    jumped = runner.Verdict("ok", timing=TimingStats(40.0, 10.0, 0, 0, 4.0, 3.5, 4.5, 15), phase="timing")
    monkeypatch.setattr(runner, "time_candidate", _fake_timing([jumped]))
    prog = program("scale", HONEST + "\n# jump")
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog), prog)], FAST)[0]
    assert rec.status == "ok" and {"remeasured", "first_reference_time_jump"} <= set(rec.flags.split(",")), rec.flags
    assert rec.speedup < 4.0


def test_aa_control_that_excludes_one_twice_flags_the_task(monkeypatch):
    from dataclasses import replace

    from vegtts.evaluate import runner
    from vegtts.evaluate.stats import TimingStats

    biased = runner.Verdict("ok", timing=TimingStats(1.2, 1.0, 0, 0, 1.2, 1.1, 1.3, 15), phase="timing")
    real = runner.measure_once
    seen = []

    def measure(ctx, prog, launcher):
        seen.append(prog)
        return replace(biased) if prog.endswith(runner.REFERENCE_COPY_BODY) else real(ctx, prog, launcher)

    monkeypatch.setattr(runner, "measure_once", measure)
    runner._last_context.clear()  # a fresh task context: its control is not measured yet
    prog = program("scale", HONEST + "\n# control")
    rec = evaluate_task(spec_of("scale"), [(sha256_text(prog), prog)], FAST)[0]
    runner._last_context.clear()  # the next test gets a real control
    assert rec.status == "ok" and "aa_control_failed" in rec.flags.split(","), rec.flags
    assert sum(p.endswith(runner.REFERENCE_COPY_BODY) for p in seen) == 2


def test_reference_copies_are_flagged():
    from vegtts.evaluate.guards import is_reference_copy

    ref = PROBLEMS["softmax"]
    documented = ref[ref.index("class Model"):ref.index("def get_inputs")].replace("class Model", "class ModelNew").replace(
        "        m = x.max", '        """the same, documented"""\n        m = x.max')
    copies = [
        "class ModelNew(Model):\n    pass\n",
        "class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x)\n",
        "ModelNew = Model\n",
        documented,
    ]
    for body in copies:
        assert is_reference_copy(ref + "\n\n" + body, ref), body
    for body in ("class ModelNew(Model):\n    def forward(self, x):\n        return torch.softmax(x, dim=-1)\n",
                 "class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x * 1.0)\n"):
        assert not is_reference_copy(ref + "\n\n" + body, ref), body
    rec = run_one("scale", HONEST)
    assert "reference_copy" in rec.flags.split(",")
