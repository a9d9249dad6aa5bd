"""Framed messages between the trusted parent and a child; no pickle anywhere.

A frame is one kind byte and an 8-byte length.  Kind ``J``: a JSON payload (control messages,
cheap, so a timed request/reply adds little).  Kind ``M``: a JSON skeleton followed by raw tensor
buffers; tensors, tuples and dicts are tagged in the skeleton, and buffers travel as their bytes
(sent straight from tensor memory, received straight into the new tensor's memory).  Decoding
builds only plain tensors, lists, tuples, dicts and JSON scalars, so a child running untrusted
code cannot make the parent execute anything, and big tensors cost about one memcpy per side.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

_HEADER = struct.Struct("!cQ")
_LEN = struct.Struct("!Q")
_DTYPES = {str(d): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
)}
SOCKET_BUFFER_BYTES = 4 << 20


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def tune_socket(sock: socket.socket) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        except OSError:
            pass


# ----------------------------------------------------------------------------- encoding


def _skeleton(obj: Any, buffers: list[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu" or t.layout != torch.strided:
            t = t.to("cpu").to_dense() if t.layout != torch.strided else t.to("cpu")
        if str(t.dtype) not in _DTYPES:
            raise TypeError(f"tensor dtype {t.dtype} cannot be transferred")
        buffers.append(t.contiguous())
        return {"__t__": len(buffers) - 1, "dtype": str(t.dtype), "shape": list(t.shape)}
    if isinstance(obj, tuple):
        return {"__tu__": [_skeleton(x, buffers) for x in obj]}
    if isinstance(obj, list):
        return [_skeleton(x, buffers) for x in obj]
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("only str-keyed dicts can be transferred")
        return {"__d__": {k: _skeleton(v, buffers) for k, v in obj.items()}}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Size):
        return {"__tu__": list(obj)}
    raise TypeError(f"value of type {type(obj).__name__} cannot be transferred")


def _raw(t: torch.Tensor) -> memoryview:
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def send_frame(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    header = _HEADER.pack(kind, len(payload))
    if len(payload) < 65536:  # one syscall for control messages (they sit inside timed regions)
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def send_json(sock: socket.socket, obj: dict[str, Any]) -> None:
    send_frame(sock, b"J", json.dumps(obj).encode())


class Encoded:
    """A message with tensors, encoded once and sendable to several children."""

    def __init__(self, obj: Any) -> None:
        self.buffers: list[torch.Tensor] = []
        self._tree = _skeleton(obj, self.buffers)
        self.skeleton = json.dumps(self._tree).encode()
        self.nbytes = len(self.skeleton) + sum(b.numel() * b.element_size() for b in self.buffers)

    def send(self, sock: socket.socket, nonce: int | None = None) -> None:
        """Send the message; a `nonce` is added to its top-level mapping (a request's own)."""
        skeleton = self.skeleton
        if nonce is not None:
            skeleton = json.dumps({"__d__": {**self._tree["__d__"], "nonce": nonce}}).encode()
        parts = [_LEN.pack(len(skeleton)), skeleton]
        for b in self.buffers:
            parts.append(_LEN.pack(b.numel() * b.element_size()))
        total = sum(len(p) for p in parts) + sum(b.numel() * b.element_size() for b in self.buffers)
        sock.sendall(_HEADER.pack(b"M", total) + b"".join(parts))
        for b in self.buffers:
            raw = _raw(b)
            if len(raw):
                sock.sendall(raw)


def send_message(sock: socket.socket, obj: Any) -> None:
    Encoded(obj).send(sock)


# ----------------------------------------------------------------------------- decoding


def _recv_into(sock: socket.socket, view: memoryview, deadline: float | None) -> None:
    got, n = 0, len(view)
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed while waiting for the peer")
            sock.settimeout(remaining)
        try:
            k = sock.recv_into(view[got:], n - got)
        except TimeoutError as exc:
            raise TimeoutError("deadline passed while waiting for the peer") from exc
        if k == 0:
            raise EOFError("peer closed the connection")
        got += k


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytearray:
    buf = bytearray(n)
    _recv_into(sock, memoryview(buf), deadline)
    return buf


def _rebuild(node: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_rebuild(x, tensors) for x in node]
    if isinstance(node, dict):
        if "__t__" in node:
            return tensors[int(node["__t__"])]
        if "__tu__" in node:
            return tuple(_rebuild(x, tensors) for x in node["__tu__"])
        if "__d__" in node:
            return {str(k): _rebuild(v, tensors) for k, v in node["__d__"].items()}
        raise ProtocolError("untagged mapping in a message skeleton")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise ProtocolError(f"bad skeleton node {type(node).__name__}")


def _tensor_specs(node: Any, out: dict[int, tuple[torch.dtype, list[int]]]) -> None:
    if isinstance(node, list):
        for x in node:
            _tensor_specs(x, out)
    elif isinstance(node, dict):
        if "__t__" in node:
            dtype = _DTYPES.get(str(node.get("dtype")))
            shape = node.get("shape")
            if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise ProtocolError("bad tensor descriptor")
            out[int(node["__t__"])] = (dtype, shape)
        elif "__tu__" in node:
            for v in node["__tu__"]:
                _tensor_specs(v, out)
        elif "__d__" in node:
            for v in node["__d__"].values():
                _tensor_specs(v, out)


def _decode_m(sock: socket.socket, length: int, deadline: float | None) -> Any:
    (skel_len,) = _LEN.unpack(_recv_exact(sock, _LEN.size, deadline))
    if skel_len > length:
        raise ProtocolError("skeleton longer than the frame")
    try:
        skeleton = json.loads(_recv_exact(sock, skel_len, deadline))
    except ValueError as exc:
        raise ProtocolError(f"bad skeleton: {exc}") from exc
    specs: dict[int, tuple[torch.dtype, list[int]]] = {}
    _tensor_specs(skeleton, specs)
    if sorted(specs) != list(range(len(specs))):
        raise ProtocolError("tensor indices are not 0..n-1")
    sizes = [_LEN.unpack(_recv_exact(sock, _LEN.size, deadline))[0] for _ in specs]
    if _LEN.size * (1 + len(sizes)) + skel_len + sum(sizes) != length:
        raise ProtocolError("frame length does not match its parts")
    tensors = []
    for i, size in enumerate(sizes):
        dtype, shape = specs[i]
        numel = 1
        for s in shape:
            numel *= s
        if numel * torch.empty((), dtype=dtype).element_size() != size:
            raise ProtocolError("tensor byte size does not match its shape")
        t = torch.empty(shape, dtype=dtype)
        if size:
            _recv_into(sock, memoryview(t.view(-1).view(torch.uint8).numpy()), deadline)
        tensors.append(t)
    return _rebuild(skeleton, tensors)


def recv_message(sock: socket.socket, deadline: float | None = None, max_bytes: int = 1 << 40) -> Any:
    kind, length = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_bytes}")
    if kind == b"J":
        try:
            return json.loads(_recv_exact(sock, length, deadline))
        except ValueError as exc:
            raise ProtocolError(f"bad JSON frame: {exc}") from exc
    if kind == b"M":
        return _decode_m(sock, length, deadline)
    raise ProtocolError(f"bad frame kind {kind!r}")


def incoming_requests(sock: socket.socket, recv: Callable[[socket.socket], Any] = recv_message) -> Iterator[dict[str, Any]]:
    """The peer's requests in turn, until it says bye or closes the socket (a child's and a GPU
    worker's serving loop).  Servers pass the `recv` they bound before any program ran."""
    while True:
        try:
            msg = recv(sock)
        except EOFError:
            return
        if msg.get("op") == "bye":
            return
        yield msg
