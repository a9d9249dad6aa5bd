"""Running a problem without risking the machine: a footprint on the meta device, and a forked
child with a memory cap and a time limit.

`meta_footprint` builds the model and inputs on torch's meta device (shapes, no storage) and
runs the forward under a dispatch mode that adds up the bytes every op reads and writes and,
through torch's flop counter, its floating-point operations.  That costs milliseconds even for
KernelBench's 17 GB problems, so a screen can refuse a problem that would not fit before
allocating anything, and the shape reducer can rank candidate shapes by cost.

`run_isolated` calls a function in a child forked from a warm server (multiprocessing's
forkserver, torch preloaded), with RLIMIT_AS = its current size + a budget and a wall-clock
limit.  Whatever happens in the child (an exception, MemoryError, a segfault, the kernel's OOM
killer, a hang) comes back as a status, never as a crash of the caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Rough single-thread rates of the CPU this project runs on (benchmarks/results/kernelbench_reduce_l1.md):
# only used to rank shapes of one problem and to pick the first shape to measure.
EST_FLOPS_PER_S = 30e9
EST_BYTES_PER_S = 4e9
_OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "out of memory", "bad_alloc", "not enough memory")


@dataclass
class Footprint:
    """What one forward of a problem needs, from a meta-device run (bytes and flops)."""

    input_bytes: int = 0
    param_bytes: int = 0
    output_bytes: int = 0
    written_bytes: int = 0  # every op's outputs in the forward (an upper bound on its intermediates)
    read_bytes: int = 0
    flops: int = 0
    error: str = ""  # the meta run failed (an op without a meta kernel, .item() in get_inputs, ...)

    @property
    def ok(self) -> bool:
        return not self.error

    def peak_bytes(self, input_sets: int = 1, outputs_kept: int = 1) -> int:
        """A conservative peak for holding `input_sets` inputs and `outputs_kept` outputs around one forward."""
        return self.param_bytes + input_sets * self.input_bytes + self.written_bytes + outputs_kept * self.output_bytes

    def est_ms(self) -> float:
        return 1e3 * (self.flops / EST_FLOPS_PER_S + (self.read_bytes + self.written_bytes) / EST_BYTES_PER_S)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nbytes(obj: Any) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(nbytes(x) for x in obj.values())
    return 0


def meta_footprint(source: str, init_seed: int = 0) -> Footprint:
    """The footprint of `source` (a problem file) from a run on the meta device; never raises."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    from vegtts.tasks.runtime import load_module_from_source, seed_everything

    class ByteCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.read = self.written = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            self.read += nbytes(list(args)) + nbytes(kwargs or {})
            self.written += nbytes(out)
            return out

    fp = Footprint()
    try:
        module = load_module_from_source(source, "vegtts_meta_probe", "<meta probe>")
        with torch.device("meta"):
            seed_everything(init_seed)
            model = module.Model(*module.get_init_inputs())
            inputs = list(module.get_inputs())
            fp.input_bytes = nbytes(inputs)
            if isinstance(model, torch.nn.Module):
                fp.param_bytes = sum(nbytes(t) for t in model.state_dict().values())
            counter = ByteCounter()
            with torch.no_grad(), FlopCounterMode(display=False) as flops, counter:
                output = model(*inputs)
            fp.output_bytes = nbytes(output)
            fp.read_bytes, fp.written_bytes = counter.read, counter.written
            fp.flops = int(flops.get_total_flops())
    except Exception as exc:  # noqa: BLE001 - any failure only means "no estimate"
        fp.error = f"{type(exc).__name__}: {str(exc)[:300]}"
    return fp


# ----------------------------------------------------------------------------- isolated children


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        text = str(exc).lower()
    except Exception:  # noqa: BLE001
        return False
    return any(marker in text for marker in _OOM_TEXT)


def _child(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...], memory_mb: int) -> None:
    try:
        from vegtts.evaluate.sandbox import steady_malloc, vm_size_bytes  # the evaluate package imports torch

        steady_malloc()  # the evaluator's children allocate this way too (timings comparable)
        if memory_mb > 0:
            limit = vm_size_bytes() + (memory_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        result = fn(*args)
        message: tuple[str, Any, float] = ("ok", result, peak_rss_mb())
    except BaseException as exc:  # noqa: BLE001 - everything becomes a status for the parent
        status = "memory" if is_memory_error(exc) else "error"
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        message = (status, f"{type(exc).__name__}: {str(exc)[:500]}\n" + "".join(tb[-3:])[-1500:], peak_rss_mb())
    try:
        conn.send(message)
    except (BrokenPipeError, EOFError):
        pass  # the parent gave up waiting (its time limit) and killed or left this child
    except Exception:  # noqa: BLE001 - an unpicklable result
        conn.send(("error", "result could not be sent back (not picklable)", peak_rss_mb()))
    conn.close()


_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        # everything a child imports, so that a child starts in milliseconds
        _CONTEXT.set_forkserver_preload(
            ["torch", "torch.utils.flop_counter", "vegtts.evaluate.sandbox", "vegtts.evaluate.compare",
             "vegtts.tasks.probe", "vegtts.tasks.validate", "vegtts.tasks.reduce", "vegtts.tasks.probe_warmup"]
        )
    return _CONTEXT


@dataclass
class Isolated:
    status: str  # ok | error | memory | timeout | crash
    result: Any = None  # fn's return value (status ok)
    error: str = ""
    peak_rss_mb: float = float("nan")  # the child's peak resident memory
    seconds: float = 0.0


def run_isolated(fn: Callable[..., Any], args: tuple[Any, ...], *, memory_mb: int, timeout_s: float) -> Isolated:
    """`fn(*args)` in a fresh child (module-level fn, picklable args and result); never raises
    for what happens in the child."""
    import time

    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(sender, fn, args, memory_mb), daemon=True)
    t0 = time.monotonic()
    process.start()
    sender.close()
    try:
        if receiver.poll(timeout_s):
            try:
                status, payload, peak = receiver.recv()
            except (EOFError, OSError):
                status, payload, peak = "crash", None, float("nan")
        else:
            status, payload, peak = "timeout", None, float("nan")
    finally:
        if process.is_alive():
            process.kill()
        process.join(10)
        receiver.close()
    seconds = time.monotonic() - t0
    if status == "ok":
        return Isolated("ok", payload, "", peak, seconds)
    if status == "timeout":
        return Isolated("timeout", error=f"did not finish within {timeout_s:g} s", seconds=seconds)
    if status == "crash":
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        hint = " (SIGKILL: most likely the kernel's out-of-memory killer)" if code == -9 else ""
        return Isolated("crash", error=f"the child process died without a result: {how}{hint}", seconds=seconds)
    return Isolated(status, error=str(payload), peak_rss_mb=peak, seconds=seconds)

