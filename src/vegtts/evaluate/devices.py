"""`evaluate_task`: one task's candidates on the device that `settings.device` names.

Both devices run the same sequence (`task.evaluate_programs`) with their own `task.Device`:
"cpu" (`runner`: sandboxed children on this machine's CPUs) and "cuda" (`cuda.evaluator`: a
worker process per candidate on each visible GPU).
"""

from __future__ import annotations

from pathlib import Path

from vegtts.evaluate.cuda.evaluator import CudaDevice
from vegtts.evaluate.runner import CpuDevice
from vegtts.evaluate.server import Launcher
from vegtts.evaluate.settings import EvalSettings
from vegtts.evaluate.task import Device, evaluate_programs
from vegtts.records import EvalRecord, TaskSpec


def evaluate_task(
    spec: TaskSpec,
    candidates: list[tuple[str, str]],
    settings: EvalSettings,
    cache_dir: Path | None = None,
    *,
    launcher: Launcher | None = None,
) -> list[EvalRecord]:
    """Evaluate (code_sha256, program) pairs for one task; one EvalRecord per pair, in order.

    Identical programs are evaluated once; verdicts are cached per candidate under `cache_dir`.
    `launcher` (CPU only) defaults to the shared warm fork server (benchmarks pass a SpawnLauncher).
    """
    device: Device
    if settings.device == "cuda":
        device = CudaDevice(spec, settings, cache_dir, gpus=None, dry_device=None, details=None)
    else:
        device = CpuDevice(spec, settings, launcher)
    return evaluate_programs(device, spec, candidates, settings, cache_dir)
