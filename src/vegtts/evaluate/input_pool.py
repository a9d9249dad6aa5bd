"""Timing inputs in sealed shared memory: generated once per task, mapped by every timing child.

Sending each timed batch through a socket costs two copies per side and dominated the
per-candidate overhead.  Instead the parent generates every timed batch of a task once and
writes each round into its own sealed memfd (nobody, the parent included, can change it
afterwards).  ``load_pool`` of round r hands that round's fd to the child (SCM_RIGHTS), which
maps it read-only: the inputs are plain tensors viewing the mapping, no copy, distinct storage
per call.  A child never holds the inputs of a later round, so it cannot precompute them.

Each side gets its own copy of the inputs, so both read them from memory neither has touched
(cold caches for both, whatever the run order); sharing one copy would let the second runner of
a round find the inputs warm in the cache.  Inputs are read-only pages: a forward that writes
into its inputs (already `incorrect` in the correctness trials) crashes here.

Work hidden in the untimed requests of a round (the load) is put back on the candidate's clock:
the parent charges every CPU cycle of the child's process outside its timed requests beyond the
reference's (paired_timing.charged_rounds).  Rounds beyond the planned ones (more rounds where the
spread is wide) are added on demand (``add_round``).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from vegtts.evaluate.protocol import _DTYPES

PAGE = mmap.ALLOCATIONGRANULARITY


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def _skeleton(obj: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous()
        if str(t.dtype) not in _DTYPES or t.layout != torch.strided or t.device.type != "cpu":
            raise TypeError(f"input tensor {t.dtype}/{t.layout}/{t.device} cannot be pooled")
        tensors.append(t)
        return {"__t__": len(tensors) - 1, "dtype": str(t.dtype), "shape": list(t.shape)}
    if isinstance(obj, (list, tuple)):
        items = [_skeleton(x, tensors) for x in obj]
        return items if isinstance(obj, list) else {"__tu__": items}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"input of type {type(obj).__name__} cannot be pooled")


@dataclass
class InputPool:
    """Parent side: per timed round and per side, one sealed memfd with that round's inputs."""

    fds: dict[tuple[int, int], int]  # (side, round) -> fd; side 0 = reference, 1 = candidate
    layout: dict[int, list[Any]]  # round -> per call: {"skeleton", "offsets"}
    round_bytes: int  # the largest round
    sides: int = 2

    @classmethod
    def build(cls, batches: dict[int, list[list[Any]]], sides: int = 2) -> InputPool:
        pool = cls({}, {}, 0, sides)
        try:
            for r, calls in batches.items():
                pool.add_round(r, calls)
        except BaseException:
            pool.close()
            raise
        return pool

    def add_round(self, r: int, calls: list[list[Any]]) -> None:
        """One more round's inputs, one sealed memfd per side."""
        chunks: list[tuple[int, torch.Tensor]] = []
        layout = []
        offset = 0
        for inputs in calls:
            tensors: list[torch.Tensor] = []
            skel = _skeleton(list(inputs), tensors)
            places = []
            for t in tensors:
                places.append(offset)
                chunks.append((offset, t))
                offset = _align(offset + t.numel() * t.element_size())
            layout.append({"skeleton": skel, "offsets": places})
        size = max(offset, PAGE)
        fds = {}
        try:
            for side in range(self.sides):
                fds[(side, r)] = _sealed_memfd(size, chunks)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        self.fds.update(fds)
        self.layout[r] = layout
        self.round_bytes = max(self.round_bytes, size)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def load_request(self, round_idx: int) -> dict[str, Any]:
        return {"op": "load_pool", "calls": self.layout[round_idx]}

    def fd_sender(self, side: int, round_idx: int) -> Any:
        fd = self.fds[(side, round_idx)]
        return lambda sock: socket.send_fds(sock, [b"P"], [fd])


def _sealed_memfd(size: int, chunks: list[tuple[int, torch.Tensor]]) -> int:
    fd = os.memfd_create("vegtts-timing-inputs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        for off, t in chunks:
            raw = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
            done = 0
            while done < len(raw):
                done += os.pwrite(fd, raw[done:], off + done)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd


# ----------------------------------------------------------------------------- child side


def receive_batch(sock: socket.socket, calls: list[dict[str, Any]]) -> list[list[Any]]:
    """Child side of `load_pool`: receive the round's fd, map it read-only, view the inputs."""
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise RuntimeError("load_pool: no file descriptor received")
    try:
        size = os.fstat(fds[0]).st_size
        mapped = mmap.mmap(fds[0], size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)
    finally:
        for fd in fds:
            os.close(fd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the given buffer is not writable": read-only on purpose
        return [_rebuild(mapped, call["skeleton"], call["offsets"]) for call in calls]


def _rebuild(mapped: mmap.mmap, node: Any, offsets: list[int]) -> Any:
    if isinstance(node, list):
        return [_rebuild(mapped, x, offsets) for x in node]
    if isinstance(node, dict):
        if "__t__" in node:
            dtype = _DTYPES[node["dtype"]]
            shape = [int(s) for s in node["shape"]]
            numel = 1
            for s in shape:
                numel *= s
            if numel == 0:
                return torch.empty(shape, dtype=dtype)
            return torch.frombuffer(mapped, dtype=dtype, count=numel, offset=int(offsets[node["__t__"]])).view(shape)
        if "__tu__" in node:
            return tuple(_rebuild(mapped, x, offsets) for x in node["__tu__"])
    return node
