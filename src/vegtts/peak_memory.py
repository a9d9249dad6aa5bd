"""Peak resident memory of this process while a block runs (VmHWM where the kernel resets it, else a
polling thread over VmRSS): what TTT steps and the scoring benchmark report as their memory."""

from __future__ import annotations

import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class PeakMemory:
    """Peak resident memory of this process over a block, in MiB (see `measure_peak_rss`)."""

    start_mb: float = float("nan")
    peak_mb: float = float("nan")
    method: str = ""
    _carried_kb: int = 0  # high-water marks of inner blocks that reset the kernel's counter

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


_ACTIVE: list[PeakMemory] = []  # open measure_peak_rss blocks (outermost first)


@contextmanager
def measure_peak_rss(poll_seconds: float = 0.005) -> Iterator[PeakMemory]:
    """Measure the peak RSS of the process during the block; blocks may nest.

    Linux: the kernel's high-water mark (VmHWM), reset at entry by writing 5 to
    /proc/self/clear_refs, so consecutive blocks are measured independently in one process
    (before resetting, an inner block hands the mark so far to the enclosing blocks).  Where
    that reset is not allowed, a thread polls VmRSS (may miss very short spikes); without /proc
    at all, getrusage's lifetime maximum (not resettable: an upper bound).  The poller runs
    alongside the reset mark too: some kernels (and sandboxes such as gVisor) accept the reset
    but update VmHWM lazily, and CI saw a 256 MiB allocation leave it unchanged.
    """
    result = PeakMemory()
    start_kb = _read_status_kb("VmRSS")
    reset = False
    if start_kb is not None:
        hwm = _read_status_kb("VmHWM") or 0
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            reset = True
            for outer in _ACTIVE:
                outer._carried_kb = max(outer._carried_kb, hwm)
        except OSError:
            reset = False
    stop = threading.Event()
    polled = [start_kb or 0]

    def poll() -> None:
        while not stop.wait(poll_seconds):
            now = _read_status_kb("VmRSS")
            if now is not None and now > polled[0]:
                polled[0] = now

    poller = None
    if start_kb is not None:
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
    _ACTIVE.append(result)
    try:
        yield result
    finally:
        _ACTIVE.remove(result)
        stop.set()
        if poller is not None:
            poller.join()
        if reset:
            peak_kb = max(_read_status_kb("VmHWM") or 0, result._carried_kb, polled[0])
            result.peak_mb = peak_kb / 1024
            result.method = "max(VmHWM reset via clear_refs, VmRSS polled)"
            for outer in _ACTIVE:
                outer._carried_kb = max(outer._carried_kb, peak_kb)
        elif start_kb is not None:
            result.peak_mb, result.method = polled[0] / 1024, "VmRSS polled"
        else:  # pragma: no cover - non-Linux
            result.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            result.method = "getrusage ru_maxrss (lifetime)"
        result.start_mb = (start_kb / 1024) if start_kb is not None else float("nan")
