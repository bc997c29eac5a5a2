"""Peak memory of a method while it runs: CUDA allocated bytes, or sampled RSS on a CPU."""

from __future__ import annotations

import gc
import os
import threading

import torch


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc), so that an RSS
    measurement that starts now is not masked by memory an earlier cell freed but kept."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory above the level at entry while the block runs, in bytes.

    CUDA: torch.cuda.max_memory_allocated. CPU: resident set size sampled every 20 ms (a
    process-wide measure: it includes allocator caches, and misses peaks shorter than 20 ms).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._start = _rss_bytes()
            self._max = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._max = max(self._max, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, _rss_bytes())
            self.peak = self._max - self._start
