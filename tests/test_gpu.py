"""The CUDA device of the evaluator, the GPU task suite and the KernelBench loader options.

What runs without a GPU: suite loading and shape settings, settings and cache keys, build-cache
keys, the CUDA parts of the hand-written candidates compiled by nvcc (when nvcc is installed),
and the whole parent/worker orchestration with CPU workers (`dry_device="cpu"`: the same
processes, protocol, guards, comparison and statistics; CUDA events replaced by a host clock).
The GPU verdicts themselves need an NVIDIA GPU and a CUDA build of torch; those tests skip with
that reason, and the H200 proof is benchmarks/results/gpu_h200_run6*.txt (notes: gpu_h200_NOTES.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from vegtts.evaluate import EvalSettings, evaluate_task
from vegtts.evaluate.cuda.build_cache import build_dir_for, build_env, is_warm, source_key
from vegtts.evaluate.cuda.evaluator import evaluate_task_cuda
from vegtts.tasks import list_task_ids, load_module_from_source, load_tasks, make_inputs, solution_program

CANDIDATES = Path(__file__).resolve().parent / "gpu_candidates"
GPU_IDS = ["gpu_cross_entropy", "gpu_gelu_tanh", "gpu_layernorm", "gpu_linear_relu", "gpu_scale_add", "gpu_softmax_rows"]
SMALL = {"suite": "builtin_gpu", "ids": "all", "shape_scale": 1 / 64,
         "shape_overrides": {"gpu_linear_relu": {"IN_FEATURES": 64, "OUT_FEATURES": 32}}}
NO_GPU = "needs an NVIDIA GPU and a CUDA build of torch (proof on H200s: benchmarks/results/gpu_h200_run6*.txt)"


def _candidates() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(CANDIDATES.glob("*.py")):
        task, name = path.stem.split("__", 1)
        out.append((task, name, path.read_text()))
    return out


# ---------------------------------------------------------------- suite and shape settings


def test_builtin_gpu_suite_is_separate_from_the_cpu_suite():
    assert list_task_ids({"suite": "builtin_gpu", "ids": "default"}) == GPU_IDS
    assert not set(GPU_IDS) & set(list_task_ids({"suite": "builtin", "ids": "all"}))


def test_shape_scale_and_overrides_change_every_shape_consistently():
    specs = {s.task_id: s for s in load_tasks(SMALL)}
    module = load_module_from_source(specs["gpu_linear_relu"].source, "m", "<t>")
    (x,) = make_inputs(module, 0)
    assert tuple(x.shape) == (64, 64)  # BATCH 4096/64, IN_FEATURES overridden
    model = module.Model(*module.get_init_inputs())
    assert tuple(model(x).shape) == (64, 32)
    full = {s.task_id: s for s in load_tasks({"suite": "builtin_gpu", "ids": ["gpu_linear_relu"]})}
    assert full["gpu_linear_relu"].source_sha256 != specs["gpu_linear_relu"].source_sha256  # new shapes, new cache keys


def test_shape_override_of_an_unknown_constant_names_what_is_allowed():
    with pytest.raises(ValueError, match=r"shape_overrides for 'gpu_gelu_tanh'.*\['NOPE'\].*allowed: \['COLS', 'ROWS'\]"):
        load_tasks({"suite": "builtin_gpu", "ids": ["gpu_gelu_tanh"], "shape_overrides": {"gpu_gelu_tanh": {"NOPE": 3}}})
    with pytest.raises(ValueError, match="shape_scale must be a number > 0"):
        load_tasks({"suite": "builtin_gpu", "ids": ["gpu_gelu_tanh"], "shape_scale": 0})


def test_kernelbench_checkout_loads_with_overrides_by_problem_number(tmp_path):
    level = tmp_path / "KernelBench" / "level1"
    level.mkdir(parents=True)
    (level / "95_CrossEntropyLoss.py").write_text(
        "import torch\nimport torch.nn as nn\n\nbatch_size = 32768\nnum_classes = 4096\n\n\n"
        "class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n"
        "    def forward(self, predictions, targets):\n        return torch.nn.functional.cross_entropy(predictions, targets)\n\n\n"
        "def get_inputs():\n    return [torch.rand(batch_size, num_classes), torch.randint(0, num_classes, (batch_size,))]\n\n\n"
        "def get_init_inputs():\n    return []\n"
    )
    cfg = {"suite": "kernelbench", "path": str(tmp_path), "level": 1, "ids": [95], "shape_scale": 1 / 1024,
           "shape_overrides": {95: {"num_classes": 10}}}
    (spec,) = load_tasks(cfg)
    assert spec.task_id == "kb1_95" and spec.atol == 1e-4
    module = load_module_from_source(spec.source, "kb", "<kb>")
    logits, targets = make_inputs(module, 1)
    assert tuple(logits.shape) == (32, 10)
    assert targets.dtype == torch.int64  # integer targets stay integer (KernelBench's harness casts them to float)
    assert torch.isfinite(module.Model()(logits, targets))


# ---------------------------------------------------------------- settings and build cache


def test_cuda_settings_validate_and_stay_out_of_cpu_cache_keys():
    cpu = EvalSettings()
    assert not {"tf32", "gpus", "build_cache_dir", "l2_flush_mb"} & set(cpu.cache_key())
    cuda = EvalSettings(device="cuda", tf32=True)
    assert cuda.cache_key()["tf32"] is True and "build_cache_dir" not in cuda.cache_key()
    assert EvalSettings(device="cuda").settings_hash() != cuda.settings_hash()
    with pytest.raises(ValueError, match=r"device 'tpu' is not supported; allowed: \['cpu', 'cuda'\]"):
        EvalSettings(device="tpu")
    with pytest.raises(ValueError, match="gpus and l2_flush_mb must be >= 0"):
        EvalSettings(device="cuda", gpus=-1)


def test_build_cache_is_keyed_by_source_and_toolchain(tmp_path):
    a, b = "x = 1\n", "x = 2\n"
    assert source_key(a) == source_key(a) and source_key(a) != source_key(b)
    assert source_key(a, "torch=2.11;cuda=13.0") != source_key(a, "torch=2.11;cuda=12.8")
    d = build_dir_for(tmp_path, a)
    env = build_env(d)
    assert env["TORCH_EXTENSIONS_DIR"].startswith(str(d)) and env["TRITON_CACHE_DIR"].startswith(str(d))
    assert not is_warm(d)
    (Path(env["TORCH_EXTENSIONS_DIR"]) / "ext").mkdir(parents=True)
    (Path(env["TORCH_EXTENSIONS_DIR"]) / "ext" / "ext.so").write_bytes(b"\0")
    assert is_warm(d) and not is_warm(build_dir_for(tmp_path, b))


def test_cuda_device_without_a_gpu_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    (spec,) = load_tasks({**SMALL, "ids": ["gpu_gelu_tanh"]})
    program = solution_program(spec, "class ModelNew(Model):\n    pass\n")
    with pytest.raises(RuntimeError, match="device is 'cuda' but no GPU is visible"):
        evaluate_task(spec, [("", program)], EvalSettings(device="cuda"))


# ---------------------------------------------------------------- candidates: compiler, static checks


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed on this machine")
def test_cuda_sources_of_the_candidates_compile_with_nvcc(tmp_path):
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    assert "Cuda compilation tools" in version
    checked = 0
    for task, name, text in _candidates():
        match = re.search(r'_CUDA = r"""(.*?)"""', text, re.S)
        if not match:
            continue
        cu = tmp_path / f"{task}__{name}.cu"
        cu.write_text(match.group(1))
        proc = subprocess.run(["nvcc", "-c", str(cu), "-o", str(cu.with_suffix(".o"))], capture_output=True, text=True)
        if name == "compile_error":
            assert proc.returncode != 0 and 'identifier "undeclared_scale" is undefined' in proc.stdout + proc.stderr
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        checked += 1
    assert checked >= 5


def test_candidates_declare_expected_verdicts_and_pass_the_static_checks():
    from vegtts.evaluate.guards import static_check

    specs = {s.task_id: s for s in load_tasks({"suite": "builtin_gpu", "ids": "all"})}
    kinds = {"ok-fast", "ok-slow", "ok-not-fast", "incorrect", "crash", "compile_error"}
    names = []
    for task, name, text in _candidates():
        expected = text.splitlines()[0].split("expected:", 1)[1].strip()
        assert expected in kinds or expected.startswith("rejected:"), (name, expected)
        # every guard that matters holds dynamically: the hacks get past the static filter on purpose
        assert static_check(solution_program(specs[task], text), specs[task].source, True) is None, name
        names.append(name)
    honest = [n for n in names if "hack" not in n and n != "compile_error"]
    assert len(honest) >= 8 and sum("hack" in n for n in names) >= 5


# ---------------------------------------------------------------- orchestration with CPU workers


@pytest.mark.slow
def test_parent_worker_orchestration_on_cpu_workers(tmp_path):
    """Dry mode: real worker processes on two "GPUs" (CPU), hacks caught by the same guards."""
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    hacks = {n: t for task, n, t in _candidates() if task == "gpu_gelu_tanh" and n in ("hack_replay_cache", "hack_stale_memory", "hack_early_exit")}
    programs = {
        "aa": "class ModelNew(Model):\n    pass\n",
        "exit": "import sys\n\n\nclass ModelNew(Model):\n    def forward(self, x):\n        sys.exit(0)\n",
        "tf32": "class ModelNew(Model):\n    def forward(self, x):\n        torch.set_float32_matmul_precision('high')\n        return super().forward(x)\n",
        **hacks,
    }
    expected = {"aa": ("ok", ""), "exit": ("rejected", "exit_called"), "tf32": ("rejected", "precision_policy_changed"),
                "hack_replay_cache": ("rejected", "timed_output_mismatch"), "hack_stale_memory": ("incorrect", ""),
                "hack_early_exit": ("crash", "")}
    settings = EvalSettings(device="cuda", timing_rounds=3, calls_per_round=2, correctness_trials=3, bootstrap=100)
    details: list[dict] = []
    records = evaluate_task_cuda(spec, [("", solution_program(spec, p)) for p in programs.values()], settings, tmp_path,
                                 gpus=["dry0", "dry1"], dry_device="cpu", details=details)
    got = {name: (r.status, r.guard) for name, r in zip(programs, records)}
    assert got == expected, {n: (r.status, r.guard, r.error[:200]) for n, r in zip(programs, records)}
    assert records[0].speedup > 0 and records[0].speedup_lo <= records[0].speedup_hi
    assert {d["gpu"] for d in details} == {"dry0", "dry1"}  # one worker thread per GPU, both used
    assert not torch.cuda.is_initialized()  # the parent never initialises CUDA
    again = evaluate_task_cuda(spec, [("", solution_program(spec, programs["aa"]))], settings, tmp_path, gpus=["dry0"], dry_device="cpu")
    assert again[0].cached and again[0].status == "ok"


def test_integer_inputs_reach_the_worker_as_integers(tmp_path):
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_cross_entropy"]
    check = ("class ModelNew(Model):\n    def forward(self, logits, targets):\n"
             "        assert targets.dtype == torch.int64, targets.dtype\n        return super().forward(logits, targets)\n")
    (rec,) = evaluate_task_cuda(spec, [("", solution_program(spec, check))], EvalSettings(device="cuda", timing_rounds=3, bootstrap=50),
                                tmp_path, gpus=["dry0"], dry_device="cpu")
    assert rec.status == "ok", rec.error


# ---------------------------------------------------------------- on a GPU


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_gpu_candidates_get_their_expected_verdicts(tmp_path):
    specs = {s.task_id: s for s in load_tasks({"suite": "builtin_gpu", "ids": "all"})}
    settings = EvalSettings(device="cuda", timing_rounds=10, calls_per_round=2)
    for task, name, text in _candidates():
        expected = text.splitlines()[0].split("expected:", 1)[1].strip()
        (rec,) = evaluate_task_cuda(specs[task], [("", solution_program(specs[task], text))], settings, tmp_path)
        if expected.startswith("ok"):
            assert rec.status == "ok", (name, rec.error)
            if expected == "ok-fast":
                assert rec.speedup_lo > 1, name
            elif expected == "ok-slow":
                assert rec.speedup_hi < 1, name
            else:
                assert rec.speedup_lo <= 1.05, name
        elif expected.startswith("rejected:"):
            assert (rec.status, rec.guard) == ("rejected", expected.split(":", 1)[1]), name
        else:
            assert rec.status == expected, (name, rec.error)


@pytest.mark.slow
def test_excessive_speedup_is_retimed_with_fresh_workers(tmp_path):
    """A speedup above `excessive_speedup` is timed again with a fresh reference and candidate worker."""
    cfg = {"suite": "builtin_gpu", "ids": ["gpu_gelu_tanh"], "shape_overrides": {"gpu_gelu_tanh": {"ROWS": 512, "COLS": 1024}}}
    (spec,) = load_tasks(cfg)
    fused = "class ModelNew(Model):\n    def forward(self, x):\n        return torch.nn.functional.gelu(x, approximate='tanh')\n"
    settings = EvalSettings(device="cuda", timing_rounds=3, calls_per_round=2, bootstrap=50, excessive_speedup=1.05, threads=1)
    (rec,) = evaluate_task_cuda(spec, [("", solution_program(spec, fused))], settings, tmp_path, gpus=["dry0"], dry_device="cpu")
    assert rec.status == "ok", rec.error
    assert "excessive_speedup_retimed" in rec.flags.split(","), (rec.speedup, rec.flags)


def test_timing_settings_validate_and_enter_the_cache_key():
    default = EvalSettings(device="cuda")
    assert (default.gpu_hold, default.min_interval_rel) == (True, 0.01)
    assert EvalSettings(device="cuda", gpu_hold=False).settings_hash() != default.settings_hash()
    assert EvalSettings(device="cuda", min_interval_rel=0.0).settings_hash() != default.settings_hash()
    assert not {"gpu_hold", "min_interval_rel"} & set(EvalSettings().cache_key())  # CPU keys unchanged
    with pytest.raises(ValueError, match=r"min_interval_rel must be in \[0, 1\), got -0.1"):
        EvalSettings(device="cuda", min_interval_rel=-0.1)
    with pytest.raises(ValueError, match=r"unknown evaluator setting\(s\) \['launch_lead_us'\]"):
        EvalSettings.from_dict({"device": "cuda", "launch_lead_us": 200})


@pytest.mark.slow
def test_timing_windows_on_two_cpu_workers(tmp_path):
    """Dry mode: every timed call reports its host-clock window and GPU, and two calls on one GPU never overlap."""
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    programs = [solution_program(spec, f"class ModelNew(Model):\n    pass\n# copy {i}\n") for i in range(4)]
    settings = EvalSettings(device="cuda", timing_rounds=3, calls_per_round=2, correctness_trials=2, bootstrap=50)
    details: list[dict] = []
    records = evaluate_task_cuda(spec, [("", p) for p in programs], settings, tmp_path, gpus=["dry0", "dry1"], dry_device="cpu",
                                 details=details)
    assert [r.status for r in records] == ["ok"] * 4, [r.error for r in records]
    by_gpu: dict[str, list] = {}
    for d in details:
        assert len(d["timing_windows"]) == 2 * settings.timing_rounds * settings.calls_per_round
        for side, uuid, t0, t1 in d["timing_windows"]:
            assert side in ("ref", "cand") and t0 <= t1 and uuid == d["gpu_uuid"] == f"dry:{d['gpu']}"
            by_gpu.setdefault(uuid, []).append((t0, t1))
    assert set(by_gpu) == {"dry:dry0", "dry:dry1"}
    for wins in by_gpu.values():
        wins.sort()
        assert all(b[0] >= a[1] for a, b in zip(wins, wins[1:]))


# ---------------------------------------------------------------- slots, keeper, timing values


def test_slot_layouts_round_trip_nested_inputs_and_outputs(tmp_path):
    from vegtts.evaluate.cuda import slots

    obj = [torch.randn(3, 5), (torch.arange(7), 2.5, None), torch.zeros(0), torch.tensor(True), "s"]
    skeleton, specs, nbytes = slots.layout_of(obj)
    assert [s[0] % slots.ALIGN for s in specs] == [0] * 4 and nbytes == 3 * slots.ALIGN  # the empty tensor takes no room
    slot = slots.new_slot(nbytes, torch.device("cpu"), str(tmp_path))
    try:
        slots.write(slot.tensor, specs, slots.tensors_of(obj))
        seen = slots.OpenedSlot(slot.handle)  # as a worker maps it
        back = slots.rebuild(skeleton, lambda i: slots.view(seen.tensor, specs[i]))
        assert torch.equal(back[0], obj[0]) and torch.equal(back[1][0], obj[1][0]) and back[1][1:] == (2.5, None)
        assert isinstance(back[1], tuple) and back[3].dtype == torch.bool and back[4] == "s"
        back[0].fill_(1.0)  # shared: the owner sees what the worker wrote
        assert torch.equal(slots.view(slot.tensor, specs[0]), torch.ones(3, 5))
        with pytest.raises(ValueError, match="does not fit a slot"):
            slots.view(slot.tensor, [nbytes - 4, [2], "torch.float32"])
    finally:
        slot.free()
    assert not Path(slot.handle["path"]).exists()
    with pytest.raises(TypeError, match="value of type dict cannot be shared"):
        slots.layout_of([{"a": 1}])


def _reply(stream, full=None, host=0.01, pre=0.06, timed_out=False, held=True):
    return {"stream_ms": stream, "full_ms": stream + 0.03 if full is None else full, "host_ms": host, "pre_ms": pre,
            "timed_out": timed_out, "held": held, "window_ns": [0, 1]}


def test_call_times_take_the_gpu_time_unless_host_or_device_wide_rules():
    from vegtts.evaluate.cuda.evaluator import HOST_SLACK_MS, call_times

    replies = [_reply(0.5), _reply(0.05, host=0.2), _reply(0.05, host=30.0), _reply(0.5, full=0.9, timed_out=True),
               _reply(0.5, full=0.7, held=False)]
    # own GPU time; launch overhead not charged; CPU work while the GPU was held charged; waited; not held
    assert call_times(replies, device_wide=False) == [0.5, 0.05, 30.0 - HOST_SLACK_MS, 0.9, 0.7]
    assert call_times(replies, device_wide=True) == [0.53, 0.08, 30.0 - HOST_SLACK_MS, 0.9, 0.7]


def _fake_session(tmp_path):
    from types import SimpleNamespace

    proc = SimpleNamespace(cpu_clock=None, cpu_idle_ns=0, cpu_in_ns=0)
    ref = SimpleNamespace(proc=proc, hold=True, empty_ms=0.003)
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    session = SimpleNamespace(spec=spec, settings=EvalSettings(device="cuda", bootstrap=200), ref=ref, gpu_uuid="u")
    return session, SimpleNamespace(proc=proc, hold=True, empty_ms=0.003)


def test_work_outside_the_call_is_flagged_or_rejected(tmp_path):
    from vegtts.evaluate.cuda.evaluator import _verdict

    session, cand = _fake_session(tmp_path)
    ref = [_reply(0.70 + 0.001 * (i % 3)) for i in range(20)]
    honest = _verdict(session, {"ref": ref, "cand": [_reply(0.10 + 0.001 * (i % 3)) for i in range(20)]}, cand, 0.0, 0.0)
    assert honest.status == "ok" and honest.flags == [] and 6.5 < honest.timing.speedup < 7.5
    lo, hi = honest.timing.speedup_lo, honest.timing.speedup_hi
    assert lo <= honest.timing.speedup * 0.99 + 1e-9 and hi >= honest.timing.speedup * 1.01 - 1e-9  # at least +-1%
    # a side stream: the current stream ends at once, the device-wide end waits for the real work
    side = _verdict(session, {"ref": ref, "cand": [_reply(0.01, full=0.74) for _ in range(20)]}, cand, 0.0, 0.0)
    assert side.status == "ok" and "other_stream_work" in side.flags and side.timing.speedup < 1.0
    # work hooked in before the start event (after the block, beside the L2 flush)
    hooked = _verdict(session, {"ref": ref, "cand": [_reply(0.1, pre=0.66) for _ in range(20)]}, cand, 0.0, 0.0)
    assert (hooked.status, hooked.guard) == ("rejected", "untimed_gpu_work")
    # CPU work between requests (a native thread computing off the clock)
    session.ref.proc = type("P", (), {"cpu_clock": 1, "cpu_idle_ns": 2_000_000, "cpu_in_ns": 50_000_000})()
    busy = type("P", (), {"cpu_clock": 1, "cpu_idle_ns": 80_000_000, "cpu_in_ns": 50_000_000})()
    bg = _verdict(session, {"ref": ref, "cand": [_reply(0.1) for _ in range(20)]},
                  type("T", (), {"proc": busy, "hold": True, "empty_ms": 0.003})(), 0.0, 0.0)
    assert (bg.status, bg.guard) == ("rejected", "background_work")


@pytest.mark.slow
def test_inputs_change_per_call_and_timed_inputs_are_secret(tmp_path):
    """Trial inputs come from public seeds (the same in every evaluation); warm-up and timed inputs from
    the parent's secret (new in every evaluation); every call gets an input of its own."""
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    log_file = tmp_path / "seen.txt"
    spy = ("class ModelNew(Model):\n    def forward(self, x):\n"
           f"        with open({str(log_file)!r}, 'a') as f:\n"
           "            f.write(f'{float(x.double().sum()):.17g}\\n')\n"
           "        return super().forward(x)\n")
    settings = EvalSettings(device="cuda", timing_rounds=2, calls_per_round=2, correctness_trials=2, warmup_calls=1, bootstrap=20)
    seen = []
    for i in range(2):
        log_file.unlink(missing_ok=True)
        (rec,) = evaluate_task_cuda(spec, [("", solution_program(spec, spy + f"# run {i}\n"))], settings, None,
                                    gpus=["dry0"], dry_device="cpu")
        assert rec.status == "ok", rec.error
        seen.append(log_file.read_text().split())
    n = settings.correctness_trials + settings.warmup_calls + settings.timing_rounds * settings.calls_per_round
    assert all(len(s) == len(set(s)) == n for s in seen)  # a fresh input for every call
    trials = settings.correctness_trials
    assert seen[0][:trials] == seen[1][:trials]  # public trial seeds: reproducible
    assert not set(seen[0][trials:]) & set(seen[1][trials:])  # secret per evaluation


@pytest.mark.slow
def test_keeper_rejects_changed_inputs_wrong_shapes_and_undelivered_outputs(tmp_path):
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    programs = {
        "mutates": "class ModelNew(Model):\n    def forward(self, x):\n        y = super().forward(x)\n        x.zero_()\n        return y\n",
        "shape": "class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x)[:-1]\n",
        "tuple": "class ModelNew(Model):\n    def forward(self, x):\n        return (super().forward(x),)\n",
        "dtype": "class ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x).double()\n",
        "syntax": "class ModelNew(Model):\n    def forward(self, x):\n        return torch.nn.functional.gelu(x, approximate='tanh', approximate='none')\n",
    }
    recs = evaluate_task_cuda(spec, [("", solution_program(spec, p)) for p in programs.values()],
                              EvalSettings(device="cuda", timing_rounds=2, calls_per_round=1, bootstrap=20), None,
                              gpus=["dry0"], dry_device="cpu")
    got = {n: (r.status, r.error) for n, r in zip(programs, recs)}
    assert got["mutates"][0] == "incorrect" and "changed its inputs" in got["mutates"][1]
    assert got["shape"][0] == "incorrect" and "shape" in got["shape"][1]
    assert got["tuple"][0] == "incorrect" and "expected a tensor" in got["tuple"][1]
    assert got["dtype"][0] == "incorrect" and "dtype" in got["dtype"][1]
    assert got["syntax"][0] == "syntax_error" and "keyword argument repeated" in got["syntax"][1], got["syntax"]


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) is not installed on this machine")
def test_blocking_kernel_ptx_assembles_for_hopper(tmp_path):
    from vegtts.evaluate.cuda.driver import BLOCK_PTX

    ptx = tmp_path / "block.ptx"
    ptx.write_text(BLOCK_PTX)
    proc = subprocess.run(["ptxas", "-arch=sm_90", "-v", str(ptx), "-o", str(tmp_path / "block.cubin")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "vegtts_block" in proc.stdout + proc.stderr and "spill" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- the small findings of issue 17


def test_repeated_keyword_is_a_syntax_error_not_a_runtime_error():
    from vegtts.evaluate.task import pre_check

    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    v = pre_check(spec, "def f(**k):\n    pass\n\nf(a=1, a=2)\n", EvalSettings())
    assert v is not None and v.status == "syntax_error" and "keyword argument repeated" in v.error
    assert pre_check(spec, solution_program(spec, "class ModelNew(Model):\n    pass\n"), EvalSettings()) is None


@pytest.mark.slow
def test_gpu_sized_problems_are_screened_at_a_small_batch_without_the_cpu_timing_check():
    import time

    from vegtts.tasks import screen_tasks
    from vegtts.tasks.validate import SCREEN_BATCH, small_batch_source

    specs = load_tasks({"suite": "builtin_gpu", "ids": "all"})
    src = small_batch_source(specs[0].source)
    assert src.endswith(f"= {SCREEN_BATCH}\n") and small_batch_source("x = 1\n") == "x = 1\n"
    t0 = time.monotonic()
    findings = screen_tasks(specs)
    assert time.monotonic() - t0 < 30  # the full-size references took 95 s
    assert findings == {s.task_id: [] for s in specs}, findings


def test_provenance_names_the_gpus_from_nvidia_smi(tmp_path, monkeypatch):
    from vegtts import io

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 580.159.04'\necho 'NVIDIA H200, 580.159.04'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(io, "_GPU_NAMES", None)
    assert io.hardware_fingerprint()["gpus"] == ["NVIDIA H200 (driver 580.159.04)"]
    monkeypatch.setattr(io, "_GPU_NAMES", [])
    assert "gpus" not in io.hardware_fingerprint()
