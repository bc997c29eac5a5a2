"""Two model passes at once on a CPU: each in its own thread with half of torch's threads.

Decoding and scoring a small model on 2 CPU cores leaves one core idle much of the time (small
matmuls, Python between kernels). Two independent passes in two Python threads at one torch
thread each keep both cores busy: torch releases the GIL inside its kernels (the gain on the
demo's evaluation: `benchmarks/eval_speed.py`, docs/results/).

On a GPU, or with a single torch thread, the two passes run one after the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

A = TypeVar("A")
B = TypeVar("B")


def can_pair(device: torch.device) -> bool:
    """Whether two passes on `device` gain from running at once (CPU with >= 2 torch threads)."""
    return device.type == "cpu" and torch.get_num_threads() >= 2


@contextlib.contextmanager
def split_threads(parts: int) -> Iterator[int]:
    """Give each of `parts` concurrent passes an equal share of torch's threads; restore after."""
    total = torch.get_num_threads()
    share = max(1, total // parts)
    torch.set_num_threads(share)
    try:
        yield share
    finally:
        torch.set_num_threads(total)


def run_pair(first: Callable[[], A], second: Callable[[], B], device: torch.device,
             enabled: bool = True) -> tuple[A, B]:
    """(first(), second()): at once in two threads where that gains (`can_pair`), else in turn.

    `first` runs in the caller's grad mode (grad mode is per thread in torch). An exception in
    either is raised here, after both have stopped.
    """
    if not (enabled and can_pair(device)):
        return first(), second()
    # Leaving the pool waits for `first` even when `second` raised; then the error propagates.
    with split_threads(2), ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_in_grad_mode(first, torch.is_grad_enabled()))
        b = second()
        a = future.result()  # raises `first`'s error, if any
    return a, b


def _in_grad_mode(fn: Callable[[], A], enabled: bool) -> Callable[[], A]:
    def wrapped() -> A:
        with torch.set_grad_enabled(enabled):
            return fn()
    return wrapped
