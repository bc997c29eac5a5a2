"""A host-speed index: fp32 matmul throughput, printed beside every recorded timing.

Instances of "the same" virtual machine type differ markedly in speed with the same code
(docs/results/). A wall time means little without the speed of the machine it
ran on, so the benchmark scripts print this index with their tables: the median GFLOPS of a
[512, 576] x [576, 1536] fp32 matmul (the shape of the embedded model's MLP on a 512-token
batch), at 1 thread and at torch's thread count.
"""

from __future__ import annotations

import statistics
import time

import torch

SHAPE = (512, 576, 1536)  # [tokens, hidden] x [hidden, d_ff] of SmolLM2-135M


def matmul_gflops(threads: int, repeats: int = 30) -> float:
    """Median GFLOPS of the SHAPE matmul at `threads` torch threads (a few tenths of a second)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        m, k, n = SHAPE
        a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
        for _ in range(3):  # warm-up
            a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * m * k * n / statistics.median(times) / 1e9


def speed_index() -> dict:
    """{"gflops_1_thread": ..., "gflops_all_threads": ..., "threads": ...}."""
    threads = torch.get_num_threads()
    return {"gflops_1_thread": round(matmul_gflops(1), 1),
            "gflops_all_threads": round(matmul_gflops(threads), 1), "threads": threads}


def speed_line() -> str:
    s = speed_index()
    return (f"host speed index: fp32 matmul {s['gflops_1_thread']:.1f} GFLOPS at 1 thread, "
            f"{s['gflops_all_threads']:.1f} at {s['threads']} (aglora.runtime.hostspeed)")
