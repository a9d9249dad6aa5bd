"""The CUDA device of the evaluator, the GPU task suite and the KernelBench loader options.

What runs without a GPU: suite loading and shape settings, settings and cache keys, build-cache
keys, the CUDA parts of the hand-written candidates compiled by nvcc (when nvcc is installed),
and the whole parent/worker orchestration with CPU workers (`dry_device="cpu"`: the same
processes, protocol, guards, comparison and statistics; CUDA events replaced by a host clock).
The GPU verdicts themselves need an NVIDIA GPU and a CUDA build of torch; those tests skip with
that reason, and the H200 proof is benchmarks/results/gpu_h200_run4.txt (notes: gpu_h200_NOTES.md).
"""

from __future__ import annotations

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
NO_GPU = "needs an NVIDIA GPU and a CUDA build of torch (proof on H200s: benchmarks/results/gpu_h200_run4.txt)"


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


def test_excessive_speedup_is_retimed_with_fresh_workers(tmp_path):
    """A speedup above `excessive_speedup` is timed again with a fresh reference and candidate worker."""
    cfg = {"suite": "builtin_gpu", "ids": ["gpu_gelu_tanh"], "shape_overrides": {"gpu_gelu_tanh": {"ROWS": 512, "COLS": 1024}}}
    (spec,) = load_tasks(cfg)
    fused = "class ModelNew(Model):\n    def forward(self, x):\n        return torch.nn.functional.gelu(x, approximate='tanh')\n"
    settings = EvalSettings(device="cuda", timing_rounds=3, calls_per_round=2, bootstrap=50, excessive_speedup=1.05, threads=1)
    (rec,) = evaluate_task_cuda(spec, [("", solution_program(spec, fused))], settings, tmp_path, gpus=["dry0"], dry_device="cpu")
    assert rec.status == "ok", rec.error
    assert "excessive_speedup_retimed" in rec.flags.split(","), (rec.speedup, rec.flags)


def test_timing_procedure_settings_validate_and_enter_the_cache_key():
    default = EvalSettings(device="cuda")
    assert (default.keep_alive_ms, default.launch_lead_us) == (0.0, 200.0)
    assert EvalSettings(device="cuda", launch_lead_us=0).settings_hash() != default.settings_hash()
    assert EvalSettings(device="cuda", keep_alive_ms=10).settings_hash() != default.settings_hash()
    assert not {"keep_alive_ms", "launch_lead_us"} & set(EvalSettings().cache_key())  # CPU keys unchanged
    with pytest.raises(ValueError, match=r"launch_lead_us must be between 0 and 10000, got -1"):
        EvalSettings(device="cuda", launch_lead_us=-1)


def test_keep_alive_passes_cover_the_requested_time():
    from vegtts.evaluate.cuda.worker import keep_alive_passes

    assert keep_alive_passes(0, 0.07) == 0
    assert keep_alive_passes(10, 0.0706) == 142  # the H200 run: 142 passes of the 120 MiB flush
    assert keep_alive_passes(0.01, 5.0) == 1


def test_timing_windows_and_keep_alive_on_two_cpu_workers(tmp_path):
    """Dry mode: the keep-alive code path runs before every timed call, every timed round reports its
    host-clock window and GPU, and two rounds on one GPU never overlap."""
    spec = {s.task_id: s for s in load_tasks(SMALL)}["gpu_gelu_tanh"]
    programs = [solution_program(spec, f"class ModelNew(Model):\n    pass\n# copy {i}\n") for i in range(4)]
    settings = EvalSettings(device="cuda", timing_rounds=3, calls_per_round=2, correctness_trials=2, bootstrap=50, keep_alive_ms=3)
    details: list[dict] = []
    records = evaluate_task_cuda(spec, [("", p) for p in programs], settings, tmp_path, gpus=["dry0", "dry1"], dry_device="cpu",
                                 details=details)
    assert [r.status for r in records] == ["ok"] * 4, [r.error for r in records]
    assert all(d["keep_alive_host_ms"] >= 3 for d in details)
    by_gpu: dict[str, list] = {}
    for d in details:
        assert len(d["timing_windows"]) == 2 * settings.timing_rounds
        for side, uuid, t0, t1 in d["timing_windows"]:
            assert side in ("ref", "cand") and t0 <= t1 and uuid == d["gpu_uuid"] == f"dry:{d['gpu']}"
            by_gpu.setdefault(uuid, []).append((t0, t1))
    assert set(by_gpu) == {"dry:dry0", "dry:dry1"}
    for wins in by_gpu.values():
        wins.sort()
        assert all(b[0] >= a[1] for a, b in zip(wins, wins[1:]))
