"""The few CUDA driver calls the GPU evaluator needs beyond torch, through ctypes (no extra package).

- Device memory shared between processes (CUDA IPC): `alloc`/`free` give an allocation of its own
  (``cuMemAlloc``: never a block of torch's caching allocator, whose segments hold other tensors),
  `ipc_handle`/`ipc_open`/`ipc_close` export it and map it in another process.  The trusted keeper
  allocates and exports; a timing worker maps what it is handed, and nothing else.
- The blocking kernel (`BlockKernel`, PTX below, loaded with ``cuModuleLoadData``: no compiler):
  it fills every SM's thread slots and spins until the host writes an expected value into a pinned
  host word, or until a timeout on the GPU's own clock (``%globaltimer``).  Queued on the timing
  stream before the L2 flush and the start event, it holds the GPU while the host enqueues the
  timed call, so no launch latency lies inside the timed span; while it runs, no other stream's
  kernel finds a free thread slot, so work on other streams cannot run before the start either.
  A timeout (the call synchronised with the GPU itself) is written to a second pinned word.

Torch must have initialised CUDA in this process first (its primary context is then current).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

IPC_HANDLE_BYTES = 64
ALLOC_ALIGN = 2 << 20  # exported allocations are padded to whole 2 MiB pages: nothing else shares them

BLOCK_PTX = r"""
.version 7.0
.target sm_70
.address_size 64

.visible .entry vegtts_block(
    .param .u64 p_flag,
    .param .u32 p_expected,
    .param .u64 p_timeout_ns,
    .param .u64 p_timed_out
)
{
    .reg .pred %p<4>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<8>;

    mov.u32 %r1, %tid.x;
    setp.ne.u32 %p1, %r1, 0;
    @%p1 bra WAIT;
    ld.param.u64 %rd1, [p_flag];
    ld.param.u32 %r2, [p_expected];
    ld.param.u64 %rd2, [p_timeout_ns];
    ld.param.u64 %rd3, [p_timed_out];
    mov.u64 %rd4, %globaltimer;
POLL:
    ld.volatile.u32 %r3, [%rd1];
    setp.eq.u32 %p2, %r3, %r2;
    @%p2 bra WAIT;
    nanosleep.u32 200;
    mov.u64 %rd5, %globaltimer;
    sub.u64 %rd6, %rd5, %rd4;
    setp.lt.u64 %p3, %rd6, %rd2;
    @%p3 bra POLL;
    st.volatile.u32 [%rd3], %r2;
WAIT:
    barrier.sync 0;
    ret;
}
"""


class CudaDriverError(RuntimeError):
    pass


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_BYTES)]


_lib: Any = None


def _driver() -> Any:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("cuda") or "libcuda.so.1"
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError:
            lib = ctypes.CDLL(name)
        lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        lib.cuIpcGetMemHandle.argtypes = [ctypes.POINTER(_IpcHandle), ctypes.c_uint64]
        lib.cuIpcOpenMemHandle_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), _IpcHandle, ctypes.c_uint]
        lib.cuIpcCloseMemHandle.argtypes = [ctypes.c_uint64]
        lib.cuModuleLoadData.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        lib.cuModuleGetFunction.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_char_p]
        lib.cuMemHostAlloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint]
        lib.cuMemHostGetDevicePointer_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p, ctypes.c_uint]
        lib.cuMemFreeHost.argtypes = [ctypes.c_void_p]
        lib.cuLaunchKernel.argtypes = [
            ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
        ]
        _lib = lib
    return _lib


def _check(code: int, what: str) -> None:
    if code != 0:
        msg = ctypes.c_char_p()
        _driver().cuGetErrorString(code, ctypes.byref(msg))
        raise CudaDriverError(f"{what} failed: CUDA error {code} ({(msg.value or b'?').decode()})")


def padded(nbytes: int) -> int:
    return max(ALLOC_ALIGN, -(-nbytes // ALLOC_ALIGN) * ALLOC_ALIGN)


def alloc(nbytes: int) -> int:
    """A device allocation of its own, padded to whole 2 MiB pages; returns the device pointer."""
    ptr = ctypes.c_uint64()
    _check(_driver().cuMemAlloc_v2(ctypes.byref(ptr), padded(nbytes)), f"cuMemAlloc({padded(nbytes)})")
    return int(ptr.value)


def free(ptr: int) -> None:
    _check(_driver().cuMemFree_v2(ptr), "cuMemFree")


def ipc_handle(ptr: int) -> bytes:
    h = _IpcHandle()
    _check(_driver().cuIpcGetMemHandle(ctypes.byref(h), ptr), "cuIpcGetMemHandle")
    return ctypes.string_at(ctypes.addressof(h), IPC_HANDLE_BYTES)  # not h.reserved: a c_char array stops at NUL


def ipc_open(handle: bytes) -> int:
    if len(handle) != IPC_HANDLE_BYTES:
        raise CudaDriverError(f"an IPC handle has {IPC_HANDLE_BYTES} bytes, got {len(handle)}")
    h = _IpcHandle()
    ctypes.memmove(ctypes.addressof(h), handle, IPC_HANDLE_BYTES)
    ptr = ctypes.c_uint64()
    _check(_driver().cuIpcOpenMemHandle_v2(ctypes.byref(ptr), h, 1), "cuIpcOpenMemHandle")  # 1: lazy peer access
    return int(ptr.value)


def ipc_close(ptr: int) -> None:
    _check(_driver().cuIpcCloseMemHandle(ptr), "cuIpcCloseMemHandle")


class _CudaArray:
    """The minimal __cuda_array_interface__ that lets torch view raw device memory (zero copy)."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 3,
                                         "strides": None}


def byte_tensor(ptr: int, nbytes: int) -> Any:
    """A uint8 torch tensor over `nbytes` of device memory at `ptr` (not owned: free it yourself)."""
    import torch

    return torch.as_tensor(_CudaArray(ptr, nbytes), device="cuda")


class BlockKernel:
    """The blocking kernel of this module's docstring, on the current device."""

    THREADS = 1024

    def __init__(self, sm_count: int, max_threads_per_sm: int = 2048) -> None:
        lib = _driver()
        self.module = ctypes.c_void_p()
        _check(lib.cuModuleLoadData(ctypes.byref(self.module), BLOCK_PTX.encode() + b"\0"), "cuModuleLoadData(block kernel)")
        self.function = ctypes.c_void_p()
        _check(lib.cuModuleGetFunction(ctypes.byref(self.function), self.module, b"vegtts_block"), "cuModuleGetFunction")
        self.blocks = max(1, sm_count * max(1, max_threads_per_sm // self.THREADS))
        # two pinned, device-mapped host words: the release value the host writes, the timeout
        # marker the GPU writes
        host = ctypes.c_void_p()
        _check(lib.cuMemHostAlloc(ctypes.byref(host), 8, 0x02), "cuMemHostAlloc")  # CU_MEMHOSTALLOC_DEVICEMAP
        dev = ctypes.c_uint64()
        _check(lib.cuMemHostGetDevicePointer_v2(ctypes.byref(dev), host, 0), "cuMemHostGetDevicePointer")
        self._words_np = (ctypes.c_uint32 * 2).from_address(host.value)
        self._words_np[0] = self._words_np[1] = 0
        self.flag_ptr = int(dev.value)
        self.timed_out_ptr = self.flag_ptr + 4
        self.value = 0
        self._launch = lib.cuLaunchKernel

    def hold(self, stream: int, timeout_ns: int) -> int:
        """Queue the kernel on `stream`; returns the value that `release` must write."""
        self.value = (self.value + 1) & 0x7FFFFFFF or 1
        args = [ctypes.c_uint64(self.flag_ptr), ctypes.c_uint32(self.value), ctypes.c_uint64(int(timeout_ns)),
                ctypes.c_uint64(self.timed_out_ptr)]
        params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        _check(self._launch(self.function, self.blocks, 1, 1, self.THREADS, 1, 1, 0, ctypes.c_void_p(stream), params, None),
               "cuLaunchKernel(block kernel)")
        return self.value

    def release(self, value: int) -> None:
        self._words_np[0] = value

    def timed_out(self, value: int) -> bool:
        """Whether the kernel holding `value` gave up waiting (read after the stream finished)."""
        return int(self._words_np[1]) == value
