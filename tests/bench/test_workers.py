"""Bench workers (aglora.bench.workers): claims, failures, job counts."""

from __future__ import annotations

import sys

import pytest
import torch

from aglora.bench import workers as bench_workers
from aglora.errors import AgloraError


def test_claims_are_exclusive_and_cleared(tmp_path):
    cell = tmp_path / "cells" / "ag_lora" / "seed0.json"
    assert bench_workers.claim(cell)
    assert not bench_workers.claim(cell)  # a second process finds it taken
    assert bench_workers.claim(tmp_path / "cells" / "ag_lora" / "seed1.json")
    bench_workers.clear_claims(tmp_path)
    assert not list(tmp_path.glob("cells/*/*.claim"))
    assert bench_workers.claim(cell)
    assert bench_workers.threads_per_job(2, 2) == 1
    assert bench_workers.threads_per_job(3, 2) == 1
    assert bench_workers.threads_per_job(2, 16) == 8


def test_a_failed_worker_is_an_error_naming_its_log(tmp_path):
    argv = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    workers = bench_workers.start_workers(argv, 1, 1, tmp_path)
    with pytest.raises(AgloraError, match=r"exit status 3\); its log is .*worker-1.log"):
        bench_workers.wait_workers(workers)
    assert "boom" in (tmp_path / "logs" / "worker-1.log").read_text()


def test_default_jobs():
    default_jobs = bench_workers.default_jobs
    assert default_jobs(torch.device("cpu"), 2) == 2
    assert default_jobs(torch.device("cpu"), 16) == 2
    assert default_jobs(torch.device("cpu"), 1) == 1
    assert default_jobs(torch.device("cpu"), None) == 1
    assert default_jobs(torch.device("cuda"), 16) == 1
