"""The GPU worker: one sandboxed process that builds and runs one program on one GPU.

Started by `evaluator` as a fresh interpreter (``python -m vegtts.evaluate.cuda.worker FD``) with
``CUDA_VISIBLE_DEVICES`` set to its one GPU, its own session, a scratch cwd and a build folder
keyed by the source hash.  It serves framed messages (`evaluate.protocol`, no pickle) on the
socket FD:

- ``setup``: set the precision policy (TF32 off/on, the same for reference and candidate), poison
  the caching allocator (so uninitialised outputs read NaN, not a freed reference buffer), import
  the program from a real file (``load_inline`` compiles, Triton JITs here; compiler messages are
  in the exception and in the captured stdout), construct ``Model``/``ModelNew`` from the seeded
  init inputs, load the reference weights (candidate), move to the GPU.  Replies with the state
  dict (reference) and the build time.
- ``forward``: one correctness call on parent-generated inputs; replies output and inputs after
  the call (both on the CPU), or nothing (``discard``: warm-up calls).
- ``load``: the next timed round's inputs (one fresh set per call), uploaded before the clock.
- ``time``: per call: keep-alive GPU work (``keep_alive_ms``, optional), L2 flush, device sync,
  launch lead (``launch_lead_us``: a GPU-side wait queued before the start event, optional),
  start event, call, end event on the current stream, *device-wide* sync, second end event; the
  timed value is start -> second end, so work left on other streams counts.  Replies the per-call
  times, the round's host-clock window and the round's last output.

Harness functions are bound before any candidate code runs, so reassigning torch attributes
later changes nothing the loop calls; guards after every call report tampering.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import threading
import time
import traceback
from typing import Any

import torch

from vegtts.evaluate.protocol import recv_message, send_json, send_message
from vegtts.evaluate.weights import load_reference_state

_ERROR_CHARS = 4000
_POISON_BYTES = 1 << 30  # caching-allocator memory pre-filled with NaN before candidate code runs


class GuardViolation(Exception):
    def __init__(self, guard: str, detail: str) -> None:
        super().__init__(f"{guard}: {detail}")
        self.guard = guard


def precision_policy() -> dict[str, Any]:
    return {
        "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "fp16_reduced_reduction": bool(torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction),
        "bf16_reduced_reduction": bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction),
    }


def set_precision_policy(tf32: bool) -> None:
    """The same explicit policy for reference and candidate (torch's defaults differ by version)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        name = os.environ.get("VEGTTS_WORKER_DEVICE", "cuda")
        self.device = torch.device("cuda", 0) if name == "cuda" else torch.device(name)  # its one visible GPU
        self.is_cuda = self.device.type == "cuda"
        self.model: Any = None
        self.policy: dict[str, Any] = {}
        self.baseline_threads = threading.active_count()
        self.round_inputs: list[list[Any]] = []
        self.flush_buffer: torch.Tensor | None = None
        self.gpu_uuid = ""
        self.keep_alive_ms = 0.0
        self.keep_alive_passes = 0  # flush passes that take at least keep_alive_ms (calibrated in setup)
        self.lead_cycles = 0  # torch.cuda._sleep cycles that take about launch_lead_us
        # bound now, before candidate code can reassign the attributes
        self._sync = torch.cuda.synchronize if self.is_cuda else (lambda *a: None)
        self._event = torch.cuda.Event
        self._record = torch.cuda.Event.record
        self._elapsed = torch.cuda.Event.elapsed_time
        self._current_stream = torch.cuda.current_stream
        self._default_stream = torch.cuda.default_stream
        self._perf_ns = time.perf_counter_ns
        self._wall_ns = time.time_ns
        self._gpu_sleep = getattr(torch.cuda, "_sleep", None)
        self._to = torch.Tensor.to
        self._no_grad = torch.no_grad
        self._tensor_type = torch.Tensor

    # ------------------------------------------------------------------ helpers
    def _device_inputs(self, inputs: list[Any]) -> list[Any]:
        """Inputs on the GPU with their own dtype: integer targets stay integer (KernelBench casts them)."""
        return [self._to(x, self.device) if isinstance(x, self._tensor_type) else x for x in inputs]

    def _check_output(self, output: Any) -> None:
        for t in output if isinstance(output, (list, tuple)) else [output]:
            if isinstance(t, torch.Tensor):
                if type(t) is not self._tensor_type:
                    raise GuardViolation("output_not_plain_tensor", f"output is a {type(t).__name__}")
                if t.device.type != self.device.type:
                    raise GuardViolation("output_not_plain_tensor", f"output on {t.device}, expected {self.device}")

    def _guards(self, output: Any) -> None:
        self._check_output(output)
        if precision_policy() != self.policy:
            raise GuardViolation("precision_policy_changed", f"precision policy {precision_policy()} != {self.policy}")
        if threading.active_count() > self.baseline_threads:
            raise GuardViolation("background_thread", "Python threads left running after the call")
        if self.is_cuda and self._current_stream(self.device) != self._default_stream(self.device):
            raise GuardViolation("stream_left_current", "the call left a non-default CUDA stream current")

    def _call(self, inputs: list[Any]) -> Any:
        with self._no_grad():
            return self.model(*inputs)

    def _poison_allocator(self) -> None:
        if not self.is_cuda:
            return
        free, _total = torch.cuda.mem_get_info(self.device)
        nbytes = min(_POISON_BYTES, free // 4)
        block = torch.empty(nbytes // 4, dtype=torch.float32, device=self.device)
        block.fill_(float("nan"))
        del block  # stays in torch's cache: a candidate's torch.empty gets NaN, never another process's data

    def _flush_l2(self) -> None:
        if self.flush_buffer is not None:
            self.flush_buffer.bitwise_not_()

    def _keep_alive(self) -> float:
        """Busy GPU work right before a timed call, so the GPU is not idle (clocked down) when it starts.

        Returns the host milliseconds spent enqueueing it (on a CPU worker: spent busy)."""
        if self.keep_alive_ms <= 0:
            return 0.0
        h0 = self._perf_ns()
        if self.is_cuda:
            for _ in range(self.keep_alive_passes):
                self._flush_l2()
        else:  # dry mode: the same code path, a host busy loop of the same length
            while (self._perf_ns() - h0) / 1e6 < self.keep_alive_ms:
                pass
        return (self._perf_ns() - h0) / 1e6

    def _launch_lead(self) -> None:
        if self.lead_cycles > 0 and self._gpu_sleep is not None:
            self._gpu_sleep(self.lead_cycles)

    def _gpu_ms(self, work: Any) -> float:
        start, end = self._event(enable_timing=True), self._event(enable_timing=True)
        self._sync(self.device)
        self._record(start)
        work()
        self._record(end)
        self._sync(self.device)
        return float(self._elapsed(start, end))

    def _calibrate(self, keep_alive_ms: float, launch_lead_us: float) -> dict[str, Any]:
        """Flush passes per keep-alive and sleep cycles per lead, measured on a busy (clocked-up) GPU."""
        self.keep_alive_ms = keep_alive_ms
        out: dict[str, Any] = {}
        if not self.is_cuda or (keep_alive_ms <= 0 and launch_lead_us <= 0):
            return out
        for _ in range(50):  # about 3 ms of flushes on an H200: clocks up before measuring
            self._flush_l2()
        pass_ms = min(self._gpu_ms(self._flush_l2) for _ in range(5))
        out["flush_pass_ms"] = pass_ms
        if keep_alive_ms > 0:
            self.keep_alive_passes = keep_alive_passes(keep_alive_ms, pass_ms)
            out["keep_alive_passes"] = self.keep_alive_passes
        if launch_lead_us > 0 and self._gpu_sleep is not None:
            probe = 200_000
            lead_ms = min(self._gpu_ms(lambda: self._gpu_sleep(probe)) for _ in range(3))
            self.lead_cycles = int(probe * (launch_lead_us / 1000.0) / max(lead_ms, 1e-6))
            out["lead_cycles"] = self.lead_cycles
        return out

    # ------------------------------------------------------------------ ops
    def setup(self, msg: dict[str, Any]) -> dict[str, Any]:
        set_precision_policy(bool(msg["tf32"]))
        self.policy = precision_policy()
        if self.is_cuda:
            torch.cuda.set_device(self.device)
            l2 = int(getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 0) or (64 << 20))
            flush_bytes = max(int(msg.get("l2_flush_bytes") or 0), 2 * l2)
            self.flush_buffer = torch.zeros(flush_bytes // 4, dtype=torch.int32, device=self.device)
        self.gpu_uuid = self._gpu_uuid()  # before candidate code runs
        calibration = self._calibrate(float(msg.get("keep_alive_ms") or 0.0), float(msg.get("launch_lead_us") or 0.0))
        if self.is_cuda:
            self._poison_allocator()
        path = os.path.join(os.getcwd(), msg["module_file"])
        with open(path, "w", encoding="utf-8") as f:
            f.write(msg["source"])
        t0 = time.perf_counter()
        try:
            spec = importlib.util.spec_from_file_location(msg["module_name"], path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[msg["module_name"]] = module  # Triton's JIT looks its module up by name
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except BaseException as exc:  # noqa: BLE001 - candidate code may raise anything
            return _failure(exc, "compile_error")
        build_s = time.perf_counter() - t0
        try:
            cls = getattr(module, msg["class_name"], None)
            if not isinstance(cls, type):
                raise NameError(f"the program defines no class {msg['class_name']}")
            init_inputs = list(msg["init_inputs"])  # from the trusted reference, sent by the parent
            torch.manual_seed(int(msg["init_seed"]))
            model = cls(*init_inputs)
            state = msg.get("state_dict")
            if state is not None and isinstance(model, torch.nn.Module):
                load_reference_state(model, state, GuardViolation)  # names mapped where they differ
            if isinstance(model, torch.nn.Module):
                model = model.to(self.device)
            self.model = model
            reply: dict[str, Any] = {"ok": True, "build_s": build_s, "policy": self.policy, "gpu_uuid": self.gpu_uuid,
                                     "calibration": calibration}
            if msg.get("want_state_dict") and isinstance(model, torch.nn.Module):
                reply["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            self._sync(self.device)
            self.baseline_threads = threading.active_count()
            self._guards(None)
            return reply
        except BaseException as exc:  # noqa: BLE001
            return _failure(exc, "runtime_error")

    def _gpu_uuid(self) -> str:
        """The physical GPU this worker runs on (not the CUDA_VISIBLE_DEVICES index)."""
        if not self.is_cuda:
            return f"dry:{os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
        return str(getattr(torch.cuda.get_device_properties(self.device), "uuid", "")) or f"index:{os.environ.get('CUDA_VISIBLE_DEVICES')}"

    def forward(self, msg: dict[str, Any]) -> dict[str, Any]:
        inputs = self._device_inputs(list(msg["inputs"]))
        self._sync(self.device)
        output = self._call(inputs)
        self._sync(self.device)
        self._guards(output)
        if msg.get("discard"):  # warm-up calls: nothing to compare, nothing to send back
            return {"ok": True}
        return {"ok": True, "output": output, "inputs": inputs}

    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.round_inputs = []
        self.round_inputs = [self._device_inputs(list(call)) for call in msg["calls"]]
        self._sync(self.device)
        return {"ok": True}

    def time_round(self) -> dict[str, Any]:
        full_ms, stream_ms, host_ms, keep_alive_ms = [], [], [], []
        output = None
        dev = self.device
        window_start = self._wall_ns()
        for inputs in self.round_inputs:
            output = None
            keep_alive_ms.append(self._keep_alive())
            self._flush_l2()
            self._sync(dev)
            if self.is_cuda:
                start, end_stream, end_full = self._event(enable_timing=True), self._event(enable_timing=True), self._event(enable_timing=True)
                h0 = self._perf_ns()
                self._launch_lead()
                self._record(start)
                output = self._call(inputs)
                self._record(end_stream)
                self._sync(dev)  # device-wide: waits for every stream of this process
                self._record(end_full)
                self._sync(dev)
                h1 = self._perf_ns()
                full_ms.append(self._elapsed(start, end_full))
                stream_ms.append(self._elapsed(start, end_stream))
            else:  # dry mode on a CPU (tests of the orchestration only)
                h0 = self._perf_ns()
                output = self._call(inputs)
                h1 = self._perf_ns()
                full_ms.append((h1 - h0) / 1e6)
                stream_ms.append((h1 - h0) / 1e6)
            host_ms.append((h1 - h0) / 1e6)
            self._guards(output)
        self.round_inputs = []
        return {"ok": True, "full_ms": full_ms, "stream_ms": stream_ms, "host_ms": host_ms, "keep_alive_ms": keep_alive_ms,
                "window_ns": [window_start, self._wall_ns()], "output": output}

    def serve(self) -> None:
        recv, send_j, send_m, failure = recv_message, send_json, send_message, _failure
        ops = {"setup": self.setup, "forward": self.forward, "load": self.load}
        while True:
            try:
                msg = recv(self.sock)
            except EOFError:
                return
            op = msg.get("op")
            if op == "bye":
                return
            try:
                reply = self.time_round() if op == "time" else ops[op](msg)
            except BaseException as exc:  # noqa: BLE001 - candidate code may raise anything
                reply = failure(exc, "runtime_error")
            try:
                send_m(self.sock, reply)
            except BaseException as exc:  # noqa: BLE001 - an output that cannot be sent
                send_j(self.sock, failure(exc, "runtime_error"))


def keep_alive_passes(keep_alive_ms: float, pass_ms: float) -> int:
    """Flush passes that keep the GPU busy for at least `keep_alive_ms` (more if its clock is still low)."""
    if keep_alive_ms <= 0:
        return 0
    return max(1, int(-(-keep_alive_ms // max(pass_ms, 1e-3))))


def _failure(exc: BaseException, default_status: str) -> dict[str, Any]:
    if isinstance(exc, GuardViolation):
        return {"ok": False, "status": "rejected", "guard": exc.guard, "error": str(exc)[:_ERROR_CHARS]}
    if isinstance(exc, SystemExit):
        return {"ok": False, "status": "rejected", "guard": "exit_called", "error": "SystemExit raised by candidate code"}
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    tb = "".join(traceback.format_tb(exc.__traceback__)[-3:])
    status = default_status
    lowered = text.lower()
    if "out of memory" in lowered:
        status = "oom"
    elif default_status == "compile_error" and not _is_build_error(exc, lowered):
        status = "runtime_error"  # raised while importing, but not by a compiler
    # compiler output sits in the middle of a long message: keep head and tail
    if len(text) > _ERROR_CHARS:
        text = text[: _ERROR_CHARS // 2] + "\n...\n" + text[-_ERROR_CHARS // 2:]
    return {"ok": False, "status": status, "error": text, "traceback": tb[-2000:]}


def _is_build_error(exc: BaseException, lowered: str) -> bool:
    name = type(exc).__name__
    return (
        "error building extension" in lowered
        or "compilationerror" in name.lower()
        or name in {"CompilationError", "CalledProcessError"}
        or "nvcc" in lowered
        or "ninja" in lowered
    )


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    try:
        Worker(sock).serve()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
