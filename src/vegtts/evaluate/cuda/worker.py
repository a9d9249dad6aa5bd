"""The GPU timing worker: one sandboxed process that builds and runs one program on one GPU.

Started by `evaluator` as a fresh interpreter (``python -m vegtts.evaluate.cuda.worker FD``) with
``CUDA_VISIBLE_DEVICES`` set to its one GPU, its own session, a scratch cwd and a build folder
keyed by the source hash.  It runs a candidate (one worker per candidate) or the task's reference
(the reference timer, kept for all candidates of a task on a GPU).  It never makes inputs and never
judges outputs: the trusted keeper (`keeper`) writes each call's inputs into this worker's input
slot right before the call and compares what the worker copies into its output slot.  Ops (framed
messages, `evaluate.protocol`, no pickle):

- ``setup``: precision policy (TF32 off/on, the same for reference and candidate), the L2 flush
  buffer, the blocking kernel (`driver.BlockKernel`), the two slots, NaN-poisoned allocator
  memory (so an uninitialised output reads NaN, not a freed buffer), then the program imported from
  a real file (``load_inline`` compiles, Triton JITs here), its model built from the seeded init
  inputs with the reference weights, moved to the GPU.  Replies the build time.
- ``forward``: one untimed call on the staged inputs (correctness trials, warm-up).
- ``time``: one timed call on the staged inputs.  On the current stream: event E0, the blocking
  kernel, event E1, L2 flush, START, the call, END; then the host releases the block, synchronises
  the device, records END_FULL.  The GPU starts the flush and the call only once the host has
  enqueued all of the call, so START -> END is the call's own GPU time with no launch latency in
  it (the profiler's kernel time plus the gaps between its kernels); while the block holds, no
  other stream's kernel can run.  Replies, per call: START -> END (stream), START -> END_FULL
  (device-wide, with other streams' work and the host's sync latency), E1 -> START (the flush, to
  catch work hooked in before START), the host time of the call, whether the block timed out (the
  call waited on the GPU itself: then its time is the device-wide one), its host-clock window.
- After either call: the guards, then the output tensors copied into the output slot.

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

from vegtts.evaluate.cuda import slots as slot_layout
from vegtts.evaluate.protocol import incoming_requests, recv_message, send_json, send_message
from vegtts.evaluate.weights import load_reference_state

_ERROR_CHARS = 4000
_POISON_BYTES = 1 << 30  # caching-allocator memory pre-filled with NaN before candidate code runs
HOLD_TIMEOUT_NS = 50_000_000  # the blocking kernel gives up after 50 ms (a call that waits on the GPU)
HOLD_STRIKES = 3  # after this many calls that waited on the GPU, the worker times without the block


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


def gpu_uuid(device: torch.device) -> str:
    """The physical GPU of `device` (not the CUDA_VISIBLE_DEVICES index); dry mode: a label."""
    if device.type != "cuda":
        return f"dry:{os.environ.get('CUDA_VISIBLE_DEVICES', '')}"
    return str(getattr(torch.cuda.get_device_properties(device), "uuid", "")) or f"index:{os.environ.get('CUDA_VISIBLE_DEVICES')}"


def _mode_stack_depth() -> Any:
    """A function returning how many torch function/dispatch modes are active (0 where unknown)."""
    f = getattr(torch._C, "_len_torch_function_stack", None)
    d = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return lambda: (f() if f else 0) + (d() if d else 0)


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        name = os.environ.get("VEGTTS_WORKER_DEVICE", "cuda")
        self.device = torch.device("cuda", 0) if name == "cuda" else torch.device(name)  # its one visible GPU
        self.is_cuda = self.device.type == "cuda"
        self.model: Any = None
        self.policy: dict[str, Any] = {}
        self.baseline_threads = threading.active_count()
        self.flush_buffer: torch.Tensor | None = None
        self.block: Any = None  # driver.BlockKernel, None where it could not be loaded
        self.hold = True  # False after HOLD_STRIKES calls waited on the GPU itself (the block timed out)
        self.strikes = 0
        self.empty_ms = 0.0
        self.in_slot: slot_layout.OpenedSlot | None = None
        self.out_slot: slot_layout.OpenedSlot | None = None
        self.gpu_uuid = ""
        # bound now, before candidate code can reassign the attributes
        self._sync = torch.cuda.synchronize if self.is_cuda else (lambda *a: None)
        self._event = torch.cuda.Event
        self._record = torch.cuda.Event.record
        self._elapsed = torch.cuda.Event.elapsed_time
        self._current_stream = torch.cuda.current_stream
        self._default_stream = torch.cuda.default_stream
        self._perf_ns = time.perf_counter_ns
        self._wall_ns = time.time_ns
        self._no_grad = torch.no_grad
        self._tensor_type = torch.Tensor
        self._copy = torch.Tensor.copy_
        self._active_count = threading.active_count
        self._modes = _mode_stack_depth()

    # ------------------------------------------------------------------ helpers
    def _inputs(self, layout: list[Any]) -> list[Any]:
        """This call's inputs: fresh views of the input slot, where the keeper just wrote them."""
        skeleton, specs = layout
        slot = self.in_slot.tensor  # type: ignore[union-attr]
        return list(slot_layout.rebuild(skeleton, lambda i: slot_layout.view(slot, specs[i])))

    def _deliver(self, output: Any, layout: list[Any]) -> list[Any]:
        """Copy the output's tensors into the output slot where the reference's lie; describe it for the keeper."""
        _skeleton, specs = layout
        slot = self.out_slot.tensor  # type: ignore[union-attr]
        leaves: list[dict[str, Any]] = []

        def leaf(x: torch.Tensor) -> dict[str, int]:
            j = len(leaves)
            ok = type(x) is self._tensor_type and j < len(specs) and list(x.shape) == list(specs[j][1]) and str(x.dtype) == specs[j][2]
            if ok:
                self._copy(slot_layout.view(slot, specs[j]), x)
            leaves.append({"shape": list(x.shape), "dtype": str(x.dtype), "copied": ok})
            return {"__t__": j}

        skeleton = slot_layout.skeleton_of(output, leaf, lambda x: f"<output of type {type(x).__name__}>")
        self._sync(self.device)
        return [skeleton, leaves]

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
        if self._active_count() > self.baseline_threads:
            raise GuardViolation("background_thread", "Python threads left running after the call")
        if self.is_cuda and self._current_stream(self.device) != self._default_stream(self.device):
            raise GuardViolation("stream_left_current", "the call left a non-default CUDA stream current")
        if self._modes():
            raise GuardViolation("torch_mode_active", "a torch function or dispatch mode is active after the call")

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

    def _warm_harness(self) -> None:
        """Run every kernel the timing loop queues once, unheld, before any timed call: with CUDA's lazy
        module loading, a kernel's first launch loads its module, which must not happen while the
        blocking kernel holds the GPU (it waits for the GPU: the block would time out)."""
        dev = self.device
        a, b = self._event(enable_timing=True), self._event(enable_timing=True)
        self._record(a)
        if self.block is not None:
            value = self.block.hold(self._current_stream(dev).cuda_stream, HOLD_TIMEOUT_NS)
            self.block.release(value)
        self._flush_l2()
        self._record(b)
        self._sync(dev)
        self._elapsed(a, b)
        if self.block is not None and self.block.timed_out(value):
            self.block = None  # the GPU never saw the release: time device-wide
        empty = []  # START -> END with nothing between: the event pair's own cost (reported, not subtracted)
        for _ in range(5):
            self._flush_l2()
            self._record(a)
            self._record(b)
            self._sync(dev)
            empty.append(float(self._elapsed(a, b)))
        self.empty_ms = sorted(empty)[2]

    # ------------------------------------------------------------------ ops
    def setup(self, msg: dict[str, Any]) -> dict[str, Any]:
        os.environ.update({str(k): str(v) for k, v in (msg.get("build_env") or {}).items()})  # its build folder
        set_precision_policy(bool(msg["tf32"]))
        torch.set_num_threads(int(msg.get("threads") or 1))  # CPU-side ops; no idle pool spinning between requests
        self.policy = precision_policy()
        notes: dict[str, Any] = {}
        if self.is_cuda:
            torch.cuda.set_device(self.device)
            props = torch.cuda.get_device_properties(self.device)
            l2 = int(getattr(props, "L2_cache_size", 0) or (64 << 20))
            flush_bytes = max(int(msg.get("l2_flush_bytes") or 0), 2 * l2)
            self.flush_buffer = torch.zeros(flush_bytes // 4, dtype=torch.int32, device=self.device)
            if msg.get("hold", True):
                try:
                    from vegtts.evaluate.cuda.driver import BlockKernel

                    self.block = BlockKernel(int(props.multi_processor_count),
                                             int(getattr(props, "max_threads_per_multi_processor", 2048) or 2048))
                except Exception as exc:  # noqa: BLE001 - timing falls back to the device-wide procedure
                    notes["hold_unavailable"] = f"{type(exc).__name__}: {exc}"[:300]
            self._warm_harness()
        self.gpu_uuid = gpu_uuid(self.device)  # before candidate code runs
        self.in_slot = slot_layout.OpenedSlot(msg["slots"]["in"])
        self.out_slot = slot_layout.OpenedSlot(msg["slots"]["out"])
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
            init_inputs = list(msg["init_inputs"])  # from the trusted parent
            torch.manual_seed(int(msg["init_seed"]))
            model = cls(*init_inputs)
            state = msg.get("state_dict")
            if state is not None and isinstance(model, torch.nn.Module):
                load_reference_state(model, state, GuardViolation)  # names mapped where they differ
            if isinstance(model, torch.nn.Module):
                model = model.to(self.device)
            self.model = model
            self._sync(self.device)
            self.baseline_threads = self._active_count()
            self._guards(None)
            return {"ok": True, "build_s": build_s, "policy": self.policy, "gpu_uuid": self.gpu_uuid,
                    "hold": self.block is not None, "empty_ms": self.empty_ms, **notes}
        except BaseException as exc:  # noqa: BLE001
            return _failure(exc, "runtime_error")

    def forward(self, msg: dict[str, Any]) -> dict[str, Any]:
        inputs = self._inputs(msg["inputs"])
        self._sync(self.device)
        output = self._call(inputs)
        self._sync(self.device)
        self._guards(output)
        return {"ok": True, "meta": self._deliver(output, msg["output"])}

    def time_call(self, msg: dict[str, Any]) -> dict[str, Any]:
        inputs = self._inputs(msg["inputs"])
        dev = self.device
        self._sync(dev)
        t_start = self._wall_ns()
        timed_out = False
        pre_ms = 0.0
        if self.is_cuda:
            e0, e1, start, end, end_full = (self._event(enable_timing=True) for _ in range(5))
            block = self.block if self.hold else None
            self._record(e0)
            value = block.hold(self._current_stream(dev).cuda_stream, HOLD_TIMEOUT_NS) if block is not None else 0
            self._record(e1)
            self._flush_l2()
            self._record(start)
            h0 = self._perf_ns()
            output = self._call(inputs)
            h1 = self._perf_ns()
            self._record(end)
            if block is not None:
                block.release(value)
            self._sync(dev)  # device-wide: waits for every stream of this process
            self._record(end_full)
            self._sync(dev)
            if block is not None and block.timed_out(value):
                timed_out = True  # the call waited on the GPU itself; after a few such calls, no more blocks
                self.strikes += 1
                self.hold = self.strikes < HOLD_STRIKES
            stream_ms = float(self._elapsed(start, end))
            full_ms = float(self._elapsed(start, end_full))
            pre_ms = float(self._elapsed(e1, start))
        else:  # dry mode on a CPU (tests of the orchestration only)
            self._flush_l2()
            h0 = self._perf_ns()
            output = self._call(inputs)
            h1 = self._perf_ns()
            stream_ms = full_ms = (h1 - h0) / 1e6
        window = [t_start, self._wall_ns()]
        self._guards(output)
        meta = self._deliver(output, msg["output"])
        return {"ok": True, "stream_ms": stream_ms, "full_ms": full_ms, "host_ms": (h1 - h0) / 1e6, "pre_ms": pre_ms,
                "timed_out": timed_out, "held": block is not None if self.is_cuda else False,
                "window_ns": window, "meta": meta}

    def serve(self) -> None:
        serve(self.sock, {"setup": self.setup, "forward": self.forward, "time": self.time_call},
              lambda exc: _failure(exc, "runtime_error"))


def serve(sock: socket.socket, ops: dict[str, Any], failure: Any) -> None:
    """Answer framed requests with ops[msg["op"]](msg) until "bye" or the peer closes; an exception
    (candidate code may raise anything) becomes failure(exc), as does a reply that cannot be sent.
    The functions are bound on entry, before any program is imported."""
    requests, recv, send_j, send_m = incoming_requests, recv_message, send_json, send_message
    for msg in requests(sock, recv):
        try:
            reply = ops[msg.get("op")](msg)
        except BaseException as exc:  # noqa: BLE001
            reply = failure(exc)
        try:
            send_m(sock, reply)
        except BaseException as exc:  # noqa: BLE001
            send_j(sock, failure(exc))


def run_process(argv: list[str], make: Any) -> None:
    """Entry of a keeper or worker process: serve on the socket FD argv[1], then exit hard."""
    sock = socket.socket(fileno=int(argv[1]))
    try:
        make(sock).serve()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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
    elif default_status == "compile_error" and isinstance(exc, SyntaxError):
        status = "syntax_error"  # the program itself does not compile as Python (e.g. a repeated keyword)
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
    if os.environ.get("VEGTTS_WORKER_DEVICE", "cuda") == "cuda":
        try:  # a started worker waits for its program with CUDA ready: its setup then costs no context creation
            torch.zeros(1, device="cuda")
        except Exception:  # noqa: BLE001 - reported by setup, where CUDA is used again
            pass
        for name in ("torch.utils.cpp_extension", "triton", "triton.language"):  # what candidates import, ~1-2 s
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - not installed: the candidate's own import reports it
                pass
    run_process(argv, Worker)


if __name__ == "__main__":
    main(sys.argv)
