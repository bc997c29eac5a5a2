"""Two passes at once (aglora.parallel): same results as one after the other, errors raised,
torch's thread count restored, and the evaluation's numbers unchanged beyond float rounding."""

from __future__ import annotations

import threading

import pytest
import torch
from test_eval_cache import _adapted, _probes
from tiny import make_tokenizer

import aglora.pipeline.eval.evaluate as evaluate_mod
from aglora.config import EvalConfig
from aglora.runtime.threads import can_pair, run_pair, split_threads

CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


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


def test_evaluation_is_the_same_with_sides_at_once_or_in_turn(two_threads):
    pm, tok, probes = _adapted(), make_tokenizer(), _probes()
    results = {}
    for parallel in (True, False):
        cfg = EvalConfig(n_samples=1, max_new_tokens=6, cache_base=False, parallel_sides=parallel)
        metrics, records = evaluate_mod.evaluate(pm, tok, probes, cfg)
        results[parallel] = (metrics, records)
    (m1, r1), (m0, r0) = results[True], results[False]
    for a, b in zip(r1, r0, strict=True):
        assert a["base_scores"] == pytest.approx(b["base_scores"], abs=1e-4)
        assert a["after_scores"] == pytest.approx(b["after_scores"], abs=1e-4)
        assert a["base_generations"] == b["base_generations"]
        assert a["after_generations"] == b["after_generations"]
    assert m1["kl_neighbor"] == pytest.approx(m0["kl_neighbor"], rel=1e-3)  # float rounding
    assert m1["kl_neighbor"] > 0
    assert m1["splits"]["forget"]["known_accuracy"] == m0["splits"]["forget"]["known_accuracy"]


def test_a_rerun_with_the_base_side_cached_gives_the_same_numbers(two_threads, monkeypatch,
                                                                 tmp_path):
    # Cold: base and after side at once; warm: the after side's scoring and generation at once.
    # Each pass runs on one thread both times, so the numbers are the same, not just close.
    monkeypatch.setenv("AGLORA_CACHE", str(tmp_path))
    pm, tok, probes = _adapted(), make_tokenizer(), _probes()
    cfg = EvalConfig(n_samples=1, max_new_tokens=6)
    _, cold = evaluate_mod.evaluate(pm, tok, probes, cfg)
    assert list((tmp_path / "base-eval").glob("*.json"))
    _, warm = evaluate_mod.evaluate(pm, tok, probes, cfg)
    assert warm == cold
