"""Two passes at once (aglora.runtime.threads): same results as one after the other, errors
raised, torch's thread count restored."""

from __future__ import annotations

import threading

import pytest
import torch

from aglora.runtime.threads import can_pair, run_pair, split_threads

CPU = torch.device("cpu")


def test_the_two_passes_overlap_and_return_in_order(two_threads):
    assert can_pair(CPU)
    started = threading.Event()

    def first() -> tuple[bool, int]:
        started.set()
        return True, torch.get_num_threads()

    def second() -> bool:  # sees `first` running only if both run at once
        return started.wait(timeout=10)

    (a, threads_in_first), b = run_pair(first, second, CPU)
    assert (a, b) == (True, True)
    assert threads_in_first == 1            # each pass on half of the 2 threads
    assert torch.get_num_threads() == 2     # restored


def test_disabled_or_single_thread_runs_in_turn():
    order: list[str] = []
    assert run_pair(lambda: order.append("a") or 1, lambda: order.append("b") or 2, CPU,
                    enabled=False) == (1, 2)
    assert order == ["a", "b"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert not can_pair(CPU)
    finally:
        torch.set_num_threads(before)
    assert not can_pair(torch.device("cuda"))


@pytest.mark.parametrize("which", ["first", "second"])
def test_an_error_in_either_pass_is_raised_and_threads_restored(two_threads, which):
    def boom() -> int:
        raise ValueError(which)

    fns = (boom, lambda: 1) if which == "first" else (lambda: 1, boom)
    with pytest.raises(ValueError, match=which):
        run_pair(*fns, CPU)
    assert torch.get_num_threads() == 2


def test_first_pass_runs_in_the_callers_grad_mode(two_threads):
    with torch.no_grad():
        grad_in_first, _ = run_pair(torch.is_grad_enabled, lambda: None, CPU)
    assert grad_in_first is False


def test_split_threads_gives_at_least_one():
    before = torch.get_num_threads()
    with split_threads(8) as share:
        assert share == max(1, before // 8) == torch.get_num_threads()
    assert torch.get_num_threads() == before
