"""Shared buffers ("slots") between the trusted keeper and a timing worker, and how values lie in them.

A worker owns one input slot and one output slot for its life, allocated and exported by the
keeper.  Before each call the keeper writes that call's inputs into the worker's input slot;
the worker reads them as tensor views of the slot; after the call the worker copies its output
tensors into the output slot, where the keeper compares them with the reference's.

A *layout* says where an object's tensors lie in a slot: a JSON skeleton of the object (lists,
``{"__tu__": [...]}`` for tuples, constants inline, ``{"__t__": i}`` for tensor i) plus one spec
per tensor ``[offset, shape, dtype]``; offsets are aligned to 256 bytes, tensors contiguous.

Two kinds of slot, one interface:
- ``cuda_ipc``: a device allocation of its own (driver.alloc), exported by a CUDA IPC handle;
- ``file`` (dry mode, CPU workers in tests): a file mapped shared by both processes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vegtts.evaluate.protocol import _DTYPES  # the dtypes the protocol carries

ALIGN = 256


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def skeleton_of(obj: Any, tensor_leaf: Any, other: Any = None) -> Any:
    """The JSON skeleton of `obj`: tensor i (depth first) becomes tensor_leaf(t) (which returns its
    ``{"__t__": i}``); values no skeleton holds go to `other` (default: TypeError)."""

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return tensor_leaf(x)
        if isinstance(x, tuple):
            return {"__tu__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if other is None:
            raise TypeError(f"value of type {type(x).__name__} cannot be shared")
        return other(x)

    return walk(obj)


def layout_of(obj: Any) -> tuple[Any, list[list[Any]], int]:
    """(skeleton, specs, total bytes) of `obj`; raises TypeError for values a slot cannot carry."""
    specs: list[list[Any]] = []
    offset = 0

    def leaf(x: torch.Tensor) -> dict[str, int]:
        nonlocal offset
        if str(x.dtype) not in _DTYPES:
            raise TypeError(f"tensor dtype {x.dtype} cannot be shared")
        specs.append([offset, list(x.shape), str(x.dtype)])
        offset += _align(_nbytes(x))
        return {"__t__": len(specs) - 1}

    skeleton = skeleton_of(obj, leaf)
    return skeleton, specs, offset


def tensors_of(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in tensors_of(x)]
    return []


def view(slot: torch.Tensor, spec: list[Any]) -> torch.Tensor:
    """The tensor `spec` describes, as a view of the uint8 `slot`."""
    offset, shape, dtype = spec
    dt = _DTYPES[dtype]
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * torch.empty((), dtype=dt).element_size()
    if offset < 0 or offset + nbytes > slot.numel():
        raise ValueError(f"tensor of {nbytes} bytes at offset {offset} does not fit a slot of {slot.numel()} bytes")
    return slot[offset:offset + nbytes].view(dt).view([int(s) for s in shape])


def rebuild(skeleton: Any, leaf: Any) -> Any:
    """The object of `skeleton`, tensor i replaced by leaf(i)."""
    if isinstance(skeleton, list):
        return [rebuild(x, leaf) for x in skeleton]
    if isinstance(skeleton, dict):
        if "__t__" in skeleton:
            return leaf(int(skeleton["__t__"]))
        if "__tu__" in skeleton:
            return tuple(rebuild(x, leaf) for x in skeleton["__tu__"])
        raise ValueError("untagged mapping in a layout skeleton")
    return skeleton


def write(slot: torch.Tensor, specs: list[list[Any]], tensors: list[torch.Tensor]) -> None:
    for spec, t in zip(specs, tensors):
        view(slot, spec).copy_(t)


# ----------------------------------------------------------------------------- slots


@dataclass
class Slot:
    """A slot as its owner (the keeper) holds it: the bytes, how to export them, how to free them."""

    tensor: torch.Tensor
    handle: dict[str, Any]
    _ptr: int = 0
    _path: str = ""

    def free(self) -> None:
        if self._ptr:
            from vegtts.evaluate.cuda import driver

            self.tensor = torch.empty(0, dtype=torch.uint8)
            driver.free(self._ptr)
            self._ptr = 0
        if self._path:
            try:
                os.unlink(self._path)
            except OSError:
                pass
            self._path = ""


def new_slot(nbytes: int, device: torch.device, folder: str | None = None) -> Slot:
    nbytes = max(ALIGN, _align(nbytes))
    if device.type == "cuda":
        from vegtts.evaluate.cuda import driver

        ptr = driver.alloc(nbytes)
        tensor = driver.byte_tensor(ptr, nbytes)
        return Slot(tensor, {"kind": "cuda_ipc", "handle": driver.ipc_handle(ptr).hex(), "nbytes": nbytes}, _ptr=ptr)
    fd, path = tempfile.mkstemp(prefix="vegtts-slot-", dir=folder or _shm_dir())
    os.ftruncate(fd, nbytes)
    os.close(fd)
    tensor = torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)
    return Slot(tensor, {"kind": "file", "path": path, "nbytes": nbytes}, _path=path)


def _shm_dir() -> str:
    return "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class OpenedSlot:
    """A slot as a worker sees it: the bytes it was handed, mapped into this process."""

    def __init__(self, handle: dict[str, Any]) -> None:
        self.nbytes = int(handle["nbytes"])
        self._ptr = 0
        if handle.get("kind") == "cuda_ipc":
            from vegtts.evaluate.cuda import driver

            self._ptr = driver.ipc_open(bytes.fromhex(str(handle["handle"])))
            self.tensor = driver.byte_tensor(self._ptr, self.nbytes)
        elif handle.get("kind") == "file":
            self.tensor = torch.from_file(str(handle["path"]), shared=True, size=self.nbytes, dtype=torch.uint8)
        else:
            raise ValueError(f"unknown slot kind {handle.get('kind')!r}")
