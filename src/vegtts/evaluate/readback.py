"""The parent's check of timed outputs: sampled elements read straight from a child's memory.

After every timed (and warm-up) batch the parent reads, from both children's address spaces
(``sandbox.read_memory``), the elements of every call's every output tensor at positions drawn
from a secret of the parent after the batch ran, and compares them.  No code of the child runs
during the check, so an output cannot be finished lazily by it, and positions the child cannot
know mean it cannot compute just those: every element of every call has to be right.

Positions: ``SINGLE_ELEMENTS`` uniform random elements plus ``BLOCKS`` random runs of
``BLOCK_ELEMENTS`` consecutive elements (flat, row-major), or every element of a small tensor.
Addresses come from the call's (address, shape, strides) as the child described them; a
description that points at memory the child cannot have (unmapped, PROT_NONE) fails the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vegtts.evaluate.compare import Comparison, compare_outputs
from vegtts.evaluate.protocol import _DTYPES
from vegtts.evaluate.sandbox import read_memory

SINGLE_ELEMENTS = 1024
BLOCKS, BLOCK_ELEMENTS = 4, 256
_MAX_ADDRESS = 1 << 57


@dataclass
class Leaf:
    """One output leaf of one call: a tensor (address, shape, strides, dtype) or a plain value."""

    address: int = 0
    shape: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dtype: torch.dtype | None = None
    value: Any = None

    @property
    def is_tensor(self) -> bool:
        return self.dtype is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class BadDescription(ValueError):
    """A child's description of its outputs is malformed."""


def parse_leaves(described: Any) -> list[Leaf]:
    """The child's `describe_output` list for one call, validated."""
    if not isinstance(described, list):
        raise BadDescription("the output description is not a list")
    leaves = []
    for item in described:
        if isinstance(item, dict) and set(item) == {"value"}:
            if item["value"] is not None and type(item["value"]) not in (bool, int, float):
                raise BadDescription("a non-tensor output leaf is not None/bool/int/float")
            leaves.append(Leaf(value=item["value"]))
            continue
        if not (isinstance(item, list) and len(item) == 5):
            raise BadDescription("bad tensor description")
        address, shape, strides, dtype, _ = item
        if str(dtype) not in _DTYPES:
            raise BadDescription(f"unsupported output dtype {dtype!r}")
        ints = [address, *shape, *strides] if isinstance(shape, list) and isinstance(strides, list) else None
        if ints is None or not all(type(v) is int and v >= 0 for v in ints) or len(shape) != len(strides):
            raise BadDescription("bad tensor address, shape or strides")
        leaves.append(Leaf(address, tuple(shape), tuple(strides), _DTYPES[str(dtype)]))
    return leaves


def draw_positions(leaves: list[Leaf], rng: np.random.Generator) -> list[np.ndarray | None]:
    """Flat element positions to check per leaf (None for plain values), from the parent's RNG."""
    out: list[np.ndarray | None] = []
    for leaf in leaves:
        if not leaf.is_tensor:
            out.append(None)
            continue
        n = leaf.numel
        if n <= SINGLE_ELEMENTS + BLOCKS * BLOCK_ELEMENTS:
            out.append(np.arange(n, dtype=np.int64))
            continue
        singles = rng.integers(0, n, SINGLE_ELEMENTS, dtype=np.int64)
        starts = rng.integers(0, n - BLOCK_ELEMENTS + 1, BLOCKS, dtype=np.int64)
        blocks = (starts[:, None] + np.arange(BLOCK_ELEMENTS, dtype=np.int64)[None, :]).reshape(-1)
        out.append(np.concatenate([singles, blocks]))
    return out


def _iovecs(leaf: Leaf, flat: np.ndarray) -> np.ndarray:
    """(address, length) rows for the elements at `flat`, consecutive addresses merged."""
    item = torch.empty((), dtype=leaf.dtype).element_size()
    if not leaf.shape:
        offsets = np.zeros(len(flat), dtype=np.int64)
    else:
        idx = np.unravel_index(flat, leaf.shape)
        offsets = np.zeros(len(flat), dtype=np.int64)
        for ix, stride in zip(idx, leaf.strides):
            offsets += ix.astype(np.int64) * int(stride)
    addresses = leaf.address + offsets.astype(np.uint64) * np.uint64(item)
    if len(addresses) and int(addresses.max()) + item > _MAX_ADDRESS:
        raise BadDescription("an output element lies outside any possible address")
    # merge runs of consecutive addresses into one row each (blocks of a contiguous tensor)
    breaks = np.flatnonzero(np.diff(addresses.astype(np.int64)) != item) + 1
    starts = np.concatenate([[0], breaks]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [len(addresses)]])) * item
    return np.stack([addresses[starts], lengths.astype(np.uint64)], axis=1)


def read_sampled(pid: int, leaves: list[Leaf], positions: list[np.ndarray | None]) -> list[Any] | None:
    """Values of every leaf at its positions (a 1-D tensor, or the plain value); None if unreadable."""
    out: list[Any] = []
    for leaf, flat in zip(leaves, positions):
        if not leaf.is_tensor:
            out.append(leaf.value)
            continue
        if flat is None or len(flat) == 0:
            out.append(torch.empty(0, dtype=leaf.dtype))
            continue
        raw = read_memory(pid, _iovecs(leaf, flat))
        if raw is None:
            return None
        out.append(torch.frombuffer(bytearray(raw), dtype=leaf.dtype).clone())
    return out


def compare_calls(ref: list[Leaf], cand: list[Leaf], ref_values: list[Any], cand_values: list[Any],
                  atol: float, rtol: float, where: str, atol_scaled: bool = False) -> Comparison:
    """Sampled values of one call, candidate against reference (structure first); `atol_scaled`
    scales the absolute term by the sampled reference values (compare.compare_outputs)."""
    if len(ref) != len(cand):
        return Comparison(False, math.inf, math.inf, f"{where}: {len(cand)} output leaves, the reference has {len(ref)}")
    result = Comparison(True)
    for i, (r, c, rv, cv) in enumerate(zip(ref, cand, ref_values, cand_values)):
        at = f"{where} output {i}"
        if r.is_tensor != c.is_tensor:
            return Comparison(False, math.inf, math.inf, f"{at}: a {'tensor' if c.is_tensor else 'plain value'} where the reference has "
                              f"a {'tensor' if r.is_tensor else 'plain value'}")
        if r.is_tensor and (r.shape != c.shape or r.dtype != c.dtype):
            return Comparison(False, math.inf, math.inf, f"{at}: shape {list(c.shape)} {c.dtype} != reference {list(r.shape)} {r.dtype}")
        result = result.merge(compare_outputs(rv, cv, atol, rtol, at, atol_scaled=atol_scaled))
        if not result.ok:
            return result
    return result
