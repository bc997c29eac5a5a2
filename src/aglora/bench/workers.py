"""Run a bench's cells in several processes at once (`aglora bench --jobs N`).

One process at 2 threads does not keep 2 CPU cores busy: the Python between kernels, small
matrices and memory-bound element-wise work leave them idle part of the time. N processes at
cores/N threads each run N cells at once instead (measured in docs/results/bench.md). The CLI's
default is 2 jobs on a CPU with at least 2 cores (`default_jobs`), 1 on a GPU.

The parent process computes the shared steps (record + score, the base side) first, so every
worker reads them from `out/shared/`. Then it starts N-1 worker processes (`aglora bench ...
--worker`, logs in `out/logs/worker-K.log`) and works as one itself. A cell is taken by creating
`cells/<label>/seed<K>.claim` exclusively (`os.O_EXCL`), so a worker that finishes early takes
the next free cell. Claims left by an interrupted run are cleared when the next run starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from aglora.errors import AgloraError


def claim_path(cell_json: Path) -> Path:
    return cell_json.with_suffix(".claim")


def claim(cell_json: Path) -> bool:
    """True when this process now owns the cell (nobody claimed it first)."""
    path = claim_path(cell_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def clear_claims(out: Path) -> None:
    for path in (out / "cells").glob("*/*.claim"):
        path.unlink(missing_ok=True)


def default_jobs(device: torch.device, cores: int | None) -> int:
    """Cells at a time when `--jobs` is not given: 2 on a CPU with at least 2 cores (faster
    than 1 on the 2-core reference machine, docs/results/bench.md), else 1 (one GPU runs one cell
    at a time)."""
    return 2 if device.type == "cpu" and (cores or 1) >= 2 else 1


def threads_per_job(jobs: int, threads: int) -> int:
    """Threads each of `jobs` processes gets out of `threads` (at least 1)."""
    return max(1, threads // jobs)


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path


def worker_argv(config: str | Path, out: Path, methods: str | None, seeds: int | None,
                overrides: list[str], force: bool) -> list[str]:
    argv = [sys.executable, "-m", "aglora", "bench", str(config), "--out", str(out), "--worker"]
    if methods:
        argv += ["--methods", methods]
    if seeds is not None:
        argv += ["--seeds", str(seeds)]
    for item in overrides:
        argv += ["--set", item]
    if force:
        argv.append("--force")
    return argv


def start_workers(argv: list[str], n: int, threads: int, out: Path) -> list[Worker]:
    """Start n worker processes, each limited to `threads` threads, logging to out/logs/."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    (out / "logs").mkdir(parents=True, exist_ok=True)
    workers = []
    for k in range(1, n + 1):
        log = out / "logs" / f"worker-{k}.log"
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
        workers.append(Worker(proc, log))
    return workers


def wait_workers(workers: list[Worker]) -> None:
    """Wait for every worker; a failed one is an error that names its log."""
    failed = [(w, w.process.wait()) for w in workers]
    failed = [(w, rc) for w, rc in failed if rc != 0]
    if failed:
        w, rc = failed[0]
        raise AgloraError(f"a bench worker failed (exit status {rc}); its log is {w.log}. The "
                          "cells it finished are kept: rerun the same command to finish the rest")


def stop_workers(workers: list[Worker]) -> None:
    for w in workers:
        if w.process.poll() is None:
            w.process.terminate()
    for w in workers:
        try:
            w.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.process.kill()
