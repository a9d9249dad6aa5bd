"""The harness inside a child process (forked from the fork server, or a fresh interpreter).

A child serves one session: ``setup`` (exec the task source or the candidate program, build the
model, load the reference state), then ``forward`` trials (correctness) or ``load``/``run``/``end``
requests (timing).  The reference role only ever execs the trusted task source.  Every reply says
``ok`` or carries a status (``compile_error``, ``runtime_error``, ``oom``, ``rejected``) and a
short error; the parent, not the child, decides correctness and holds the clock.

A ``run`` reply describes where each call's outputs live (address, shape, strides, dtype); the
parent then reads sampled elements straight from this process's memory (``sandbox.read_memory``),
so no code of the child runs while an output is checked, and keeps every call's outputs alive
until the next ``load``/``end``.
"""

from __future__ import annotations

import linecache
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vegtts.evaluate.input_pool import receive_batch
from vegtts.evaluate.protocol import incoming_requests, recv_message, send_json, send_message, tune_socket
from vegtts.evaluate.sandbox import isolate_network, setup_child_process
from vegtts.evaluate.weights import load_reference_state

_OOM_MARKERS = ("can't allocate memory", "not enough memory", "out of memory", "bad_alloc", "cannot allocate memory")
_ERROR_CHARS = 1500


class GuardViolation(Exception):
    """A dynamic guard fired inside the child."""

    def __init__(self, guard: str, detail: str = "") -> None:
        super().__init__(detail or guard)
        self.guard = guard


@dataclass
class ChildState:
    role: str = ""
    threads: int = 1
    model: Any = None
    batch: list[list[Any]] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)  # of the last run, alive until the parent has read them
    baseline_threads: int = 1
    previous_storages: list[int] = field(default_factory=list)
    kept_outputs: list[Any] = field(default_factory=list)  # alive, so a reused buffer shows as aliasing
    watched: dict[tuple[int, str], Any] = field(default_factory=dict)  # originals of WATCHED, before candidate code
    reference_called: bool = False


# ----------------------------------------------------------------------------- dynamic guards
# Each takes (state, inputs, output) after a forward call and returns a reason or None.


def _tensors(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return [obj] if isinstance(obj, torch.Tensor) else []


def guard_plain_output(state: ChildState, inputs: list[Any], output: Any) -> str | None:
    """Outputs must be plain, materialised tensors (or nests of them and Python scalars)."""

    def check(obj: Any) -> str | None:
        if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
            for item in obj:
                reason = check(item)
                if reason:
                    return reason
            return None
        if obj is None or type(obj) in (int, float, bool):
            return None
        if type(obj) is not torch.Tensor:
            return f"output_not_plain_tensor: {type(obj).__module__}.{type(obj).__qualname__}"
        if obj.layout != torch.strided or obj.device.type != "cpu" or obj.is_meta:
            return f"output_not_plain_tensor: layout={obj.layout} device={obj.device}"
        try:
            obj.untyped_storage().data_ptr()
        except Exception as exc:  # noqa: BLE001
            return f"output_without_storage: {exc}"
        return None

    return check(output)


def guard_background_threads(state: ChildState, inputs: list[Any], output: Any) -> str | None:
    """Work deferred to a Python thread would run outside the timed batch."""
    if threading.active_count() > state.baseline_threads:
        return f"background_thread: {threading.active_count() - state.baseline_threads} thread(s) alive after forward"
    return None


def guard_thread_count(state: ChildState, inputs: list[Any], output: Any) -> str | None:
    """The thread budget is part of the benchmark; a candidate may not raise it."""
    if torch.get_num_threads() != state.threads:
        return f"thread_count_changed: torch.get_num_threads() = {torch.get_num_threads()} != {state.threads}"
    return None


def _watched_objects() -> list[tuple[Any, str]]:
    """Functions whose replacement would fool a clock, a synchronisation or this harness."""
    import time

    import vegtts.evaluate.child as harness
    import vegtts.evaluate.input_pool as input_pool
    import vegtts.evaluate.protocol as protocol

    out: list[tuple[Any, str]] = [
        (time, n) for n in ("perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "process_time", "sleep")
    ]
    out += [(torch, n) for n in ("get_num_threads", "set_num_threads", "manual_seed", "no_grad", "randn", "rand", "empty")]
    out += [(torch.cuda, "synchronize"), (threading, "active_count"), (torch.nn.Module, "__call__")]
    if hasattr(torch, "cpu") and hasattr(torch.cpu, "synchronize"):
        out.append((torch.cpu, "synchronize"))
    for module in (harness, input_pool, protocol):
        out += [(module, n) for n, v in vars(module).items() if callable(v) and not n.startswith("__")]
    return out


def snapshot_watched() -> dict[tuple[int, str], Any]:
    return {(id(obj), name): getattr(obj, name, None) for obj, name in _watched_objects()}


def guard_patched_functions(state: ChildState, inputs: list[Any], output: Any) -> str | None:
    """Timer, synchronisation, RNG or harness functions must still be the originals."""
    for obj, name in _WATCHED:
        if getattr(obj, name, None) is not state.watched.get((id(obj), name)):
            where = getattr(obj, "__name__", type(obj).__name__)
            return f"patched_function: {where}.{name} was replaced"
    return None


def guard_torch_modes(state: ChildState, inputs: list[Any], output: Any) -> str | None:
    """No torch function/dispatch mode may stay active: it would intercept the harness's own
    tensor operations (e.g. finish a lazy output while the harness samples it, off the clock)."""
    try:
        depth = _len_function_modes() + _len_dispatch_modes()
    except AttributeError:
        return None
    if depth:
        return f"torch_mode: {depth} torch function/dispatch mode(s) active after the candidate's code"
    return None


def guard_reference_called(state: ChildState, inputs: list[Any], output: Any) -> str | None:
    """With allow_reference_calls=False, the reference Model.forward ran (even if the error was caught)."""
    if state.reference_called:
        return "reference_call: ModelNew ran the reference Model.forward (allow_reference_calls is false)"
    return None


CHILD_GUARDS: list[Callable[[ChildState, list[Any], Any], str | None]] = [
    guard_reference_called,
    guard_patched_functions,
    guard_torch_modes,
    guard_plain_output,
    guard_background_threads,
    guard_thread_count,
]


# ----------------------------------------------------------------------------- helpers


def aliasing(inputs: list[Any], output: Any, previous: list[int]) -> dict[str, bool]:
    """Does an output share storage with an input, or with an output of an earlier call?"""
    out_ptrs = {t.untyped_storage().data_ptr() for t in _tensors(output) if t.numel() > 0}
    in_ptrs = {t.untyped_storage().data_ptr() for t in _tensors(inputs) if t.numel() > 0}
    return {"aliases_input": bool(out_ptrs & in_ptrs), "aliases_previous_output": bool(out_ptrs & set(previous))}


# Bound before any candidate code runs: the candidate may replace the class attributes, not these.
_data_ptr, _size, _stride, _element_size = torch.Tensor.data_ptr, torch.Tensor.size, torch.Tensor.stride, torch.Tensor.element_size
_no_torch_function = torch._C.DisableTorchFunction
_len_function_modes, _len_dispatch_modes = torch._C._len_torch_function_stack, torch._C._len_torch_dispatch_stack


def describe_output(output: Any) -> list[Any]:
    """The leaves of one call's output, in order: a tensor as [address, shape, strides, dtype,
    element size] (the parent reads its elements from this process's memory), anything else
    (None, bool, int, float) as {"value": v}.  Runs with torch functions' overrides disabled."""
    leaves: list[Any] = []

    def walk(obj: Any) -> None:
        if type(obj) in (list, tuple):
            for item in obj:
                walk(item)
        elif type(obj) is torch.Tensor:
            leaves.append([_data_ptr(obj), list(_size(obj)), list(_stride(obj)), str(obj.dtype), _element_size(obj)])
        else:
            leaves.append({"value": obj})

    with _no_torch_function():
        walk(output)
    return leaves


def _short_error(exc: BaseException, filename: str) -> str:
    try:
        head = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - a hostile __str__
        head = type(exc).__name__
    where = ""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
        if frames:
            f = frames[-1]
            where = f" (line {f.lineno}: {(f.line or '').strip()[:200]})"
    except Exception:  # noqa: BLE001
        pass
    return (head[: _ERROR_CHARS - len(where)] + where)[:_ERROR_CHARS]


def _failure(exc: BaseException, default_status: str, filename: str) -> dict[str, Any]:
    if isinstance(exc, GuardViolation):
        return {"ok": False, "status": "rejected", "guard": exc.guard, "error": str(exc)[:_ERROR_CHARS]}
    if isinstance(exc, SystemExit):
        return {"ok": False, "status": "rejected", "guard": "exit_called", "error": "SystemExit raised by candidate code"}
    error = _short_error(exc, filename)
    if isinstance(exc, MemoryError) or any(m in error.lower() for m in _OOM_MARKERS):
        return {"ok": False, "status": "oom", "error": error}
    return {"ok": False, "status": default_status, "error": error}


def _exec_source(source: str, filename: str) -> dict[str, Any]:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__vegtts_candidate__", "__file__": filename}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - this child exists to run it
    return namespace


def _exec_guarding_reference(state: ChildState, source: str, reference: str, filename: str) -> dict[str, Any]:
    """Exec a program that starts with the reference source, with Model.forward trapped in between.

    The trap raises, and also records the call, so a try/except fallback to the reference is
    still caught after the forward returns.
    """
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__vegtts_candidate__", "__file__": filename}
    exec(compile(reference, filename, "exec"), namespace)  # noqa: S102 - the trusted task source
    model_cls = namespace.get("Model")
    if isinstance(model_cls, type):

        def trapped_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            state.reference_called = True
            raise GuardViolation("reference_call", "reference_call: ModelNew ran the reference Model.forward")

        model_cls.forward = trapped_forward
    rest = "\n" * reference.count("\n") + source[len(reference):]  # keeps the candidate's line numbers
    exec(compile(rest, filename, "exec"), namespace)  # noqa: S102 - this child exists to run it
    return namespace


def _build(state: ChildState, msg: dict[str, Any]) -> None:
    role = msg["role"]
    filename = "<reference>" if role == "ref" else "<candidate>"
    state.watched = snapshot_watched()
    reference = msg.get("trap_reference") or ""
    if role == "cand" and reference and msg["source"].startswith(reference):
        namespace = _exec_guarding_reference(state, msg["source"], reference, filename)
    else:
        namespace = _exec_source(msg["source"], filename)
    cls_name = "Model" if role == "ref" else "ModelNew"
    cls = namespace.get(cls_name)
    if not isinstance(cls, type):
        raise NameError(f"the program defines no class {cls_name}")
    torch.manual_seed(int(msg["init_seed"]))
    with torch.no_grad():
        model = cls(*msg["init_inputs"])
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{cls_name} is not a torch.nn.Module")
        load_reference_state(model, msg["state"], GuardViolation)  # names mapped where they differ
    state.model = model
    for guard in (guard_reference_called, guard_patched_functions, guard_torch_modes):
        reason = guard(state, [], None)
        if reason:
            raise GuardViolation(reason.split(":", 1)[0], reason)


def _forward(state: ChildState, inputs: list[Any], guards: tuple[Any, ...] | None = None) -> Any:
    with torch.no_grad():
        output = state.model(*inputs)
    for guard in guards if guards is not None else CHILD_GUARDS:
        reason = guard(state, inputs, output)
        if reason:
            raise GuardViolation(reason.split(":", 1)[0], reason)
    return output


# ----------------------------------------------------------------------------- the session loop


def child_main(sock: socket.socket, confinement: dict[str, Any] | None = None) -> None:
    """Serve one parent until it says bye or closes the socket.

    The harness functions are bound to locals here, before any candidate code runs, so a
    candidate that reassigns this module's attributes changes nothing the loop calls.
    """
    requests, recv_message, send_json, send_message = _incoming_requests, _recv_message, _send_json, _send_message
    _build, _forward, aliasing, describe, receive_batch, _failure = (
        _build_, _forward_, _aliasing, _describe_output, _receive_batch, _failure_
    )
    guards = tuple(CHILD_GUARDS)
    tune_socket(sock)
    state = ChildState(baseline_threads=threading.active_count())
    filename = "<candidate>"
    for msg in requests(sock, recv_message):
        op, nonce = msg.get("op"), msg.get("nonce")  # every reply echoes its request's nonce
        if op == "setup":
            state.role = msg["role"]
            state.threads = int(msg["threads"])
            filename = "<reference>" if state.role == "ref" else "<candidate>"
            torch.set_num_threads(state.threads)
            try:
                _build(state, msg)
                state.baseline_threads = threading.active_count()
                reply: dict[str, Any] = {"ok": True, "confinement": confinement or {}}
            except BaseException as exc:  # noqa: BLE001 - candidate code may raise anything
                reply = _failure(exc, "compile_error", filename)
            send_json(sock, {**reply, "nonce": nonce})
        elif op == "forward":  # one correctness trial: output, inputs after the call, aliasing
            inputs = msg["inputs"]
            try:
                output = _forward(state, inputs, guards)
                flags = aliasing(inputs, output, state.previous_storages)
                state.previous_storages.extend(t.untyped_storage().data_ptr() for t in _tensors(output))
                state.kept_outputs.append(output)
                if msg.get("reply") == "ack":  # the pair's reference child: same work, nothing to send
                    send_json(sock, {"ok": True, "nonce": nonce})
                else:
                    send_message(sock, {"ok": True, "nonce": nonce, "output": output, "inputs": inputs, **flags})
            except BaseException as exc:  # noqa: BLE001
                send_json(sock, {**_failure(exc, "runtime_error", filename), "nonce": nonce})
        elif op in ("load", "load_pool", "end"):  # next timed batch's inputs (outside the clock);
            # releases the last batch and its outputs first ("end": nothing new)
            try:
                state.outputs, state.batch = [], []
                if op == "load":
                    state.batch = list(msg["batch"])
                elif op == "load_pool":
                    state.batch = receive_batch(sock, msg["calls"])
                send_json(sock, {"ok": True, "nonce": nonce})
            except BaseException as exc:  # noqa: BLE001
                send_json(sock, {**_failure(exc, "runtime_error", filename), "nonce": nonce})
        elif op == "run":  # the timed batch; the parent's clock runs from request to this reply
            try:
                state.outputs = []
                for inputs in state.batch:
                    state.outputs.append(_forward(state, inputs, guards))
                send_json(sock, {"ok": True, "nonce": nonce, "outputs": [describe(o) for o in state.outputs]})
            except BaseException as exc:  # noqa: BLE001
                send_json(sock, {**_failure(exc, "runtime_error", filename), "nonce": nonce})
        else:
            send_json(sock, {"ok": False, "nonce": nonce, "status": "crash", "error": f"harness: unknown op {op!r}"})


def spawn_main(fd: int) -> None:
    """Entry point of a fresh interpreter per child (the slow baseline the fork server replaces)."""
    import json
    import os

    isolate_network()
    config = json.loads(os.environ["VEGTTS_CHILD_CONFIG"])
    confinement = setup_child_process(config)
    sock = socket.socket(fileno=fd)
    try:
        child_main(sock, confinement)
    finally:
        sys.stdout.flush()
        os._exit(0)


# originals, bound by child_main before candidate code can reassign the module attributes
_incoming_requests, _recv_message, _send_json, _send_message = incoming_requests, recv_message, send_json, send_message
_build_, _forward_, _aliasing, _describe_output, _receive_batch, _failure_ = _build, _forward, aliasing, describe_output, receive_batch, _failure
_WATCHED = _watched_objects()
