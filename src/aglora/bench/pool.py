"""Run a bench's unfinished cells: one after another in this process, or N at once in a process
pool (`aglora bench --jobs N`).

One process at 2 threads does not keep 2 CPU cores busy: the Python between kernels, small
matrices and memory-bound element-wise work leave them idle part of the time. N processes at
cores/N threads each run N cells at once instead (measured in docs/results/bench.md). The CLI's
default is 2 jobs on a CPU with at least 2 cores (`default_jobs`), 1 on a GPU.

The pool is a standard `concurrent.futures.ProcessPoolExecutor` with the `spawn` start method (a
fresh interpreter per worker: no forked torch thread pool or CUDA state), one task per
unfinished cell in the order given (seed-major). `run_bench` computes the shared steps before
the pool starts, then only waits (its model is released). Each worker's `initializer` limits it
to cores/N torch threads (cores = this process's torch threads) and sends its log records to
this process; on its first cell the worker loads the model — the caller's own when `run_bench`
was given one (pickled), else `run.model` — and reads the shared steps from `out/shared/`. A
cell writes its `cells/<label>/seed<K>.json` atomically when it ends, in the worker, so an
interrupted bench keeps every finished cell and a rerun submits only the others. A script that
calls `run_bench` with jobs > 1 needs the `if __name__ == "__main__":` guard (spawn imports the
main module again).

Logging: the workers' records come back to this process (a `QueueHandler` in each worker, a
thread here that reads the queue) and go where the bench's own lines go: the terminal for
`aglora bench`, the `log` callable of `run_bench`. So a user watches one stream, as with one job,
instead of finding a log file per worker; each line inside a cell names the cell, since two
cells' training lines interleave; and a failed cell's traceback is printed in that stream right
before the error.

A failed cell stops the bench: the cells not yet handed to a worker are cancelled, the running
ones finish (their results are kept), and `run_cells`/`run_pool` raise one `AgloraError` naming
the cell. A worker process that dies (killed, out of memory) is the same error, naming the cells
that were in flight. An interrupt (Ctrl-C) stops the worker processes at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from logging.handlers import QueueHandler
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aglora.bench.cells import (
    SideResult,
    cell_inputs,
    cell_json,
    read_shared,
    run_cell,
    with_hashes,
)
from aglora.bench.config import BenchConfig, MethodEntry
from aglora.bench.table import cell_values
from aglora.concepts import ConceptSpec, Probe
from aglora.errors import AgloraError, disk_problem
from aglora.runtime.artifacts import write_json
from aglora.runtime.hashes import Hashes

_log = logging.getLogger("aglora")
Log = Callable[[str], None]


def default_jobs(device: torch.device, cores: int | None) -> int:
    """Cells at a time when `--jobs` is not given: 2 on a CPU with at least 2 cores (faster
    than 1 on the 2-core reference machine, docs/results/bench.md), else 1 (one GPU runs one cell
    at a time)."""
    return 2 if device.type == "cpu" and (cores or 1) >= 2 else 1


def threads_per_job(jobs: int, threads: int) -> int:
    """Threads each of `jobs` processes gets out of `threads` (at least 1)."""
    return max(1, threads // jobs)


@dataclass
class Cells:
    """What every cell of a bench needs: the model, the data and the shared steps."""

    model: nn.Module
    tok: Any
    concept: ConceptSpec
    probes: list[Probe]
    base_side: SideResult
    stats: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]
    cfg: BenchConfig
    out: Path
    inputs: Hashes  # what every cell reads, recorded in its JSON (`bench.cells.bench_inputs`)


@dataclass
class PoolSetup:
    """What a worker process is given to build its `Cells` (the shared steps it reads)."""

    cfg: BenchConfig
    concept: ConceptSpec
    probes: list[Probe]
    out: Path
    inputs: Hashes
    model_tok: tuple | None = None  # None: load run.model


# One cell to run: (entry, seed, its number in the bench's order).
Todo = tuple[MethodEntry, int, int]


def cell_name(entry: MethodEntry, seed: int) -> str:
    return f"{entry.label} seed {seed}"


def run_one(cells: Cells | Callable[[], Cells], entry: MethodEntry, seed: int, n: int,
            total: int, log: Log) -> None:
    """Run one cell and write its JSON atomically (cells/<label>/seed<K>.json). `cells` may be
    a function that builds them (a worker's first cell loads the model after its first line)."""
    name = cell_name(entry, seed)
    log(f"[bench] ({n}/{total}) {name}: running")
    c = cells if isinstance(cells, Cells) else cells()
    start = time.time()
    path = cell_json(c.out, entry, seed)
    cell = run_cell(c.model, c.tok, c.concept, c.probes, c.base_side, c.stats, c.scores, c.cfg,
                    entry, seed, path.with_suffix(""), log=_quiet(log, name))
    write_json(path, with_hashes(cell, c.out, entry, seed,
                                 cell_inputs(c.cfg, entry, seed, c.inputs)))
    v = cell_values(cell)
    log(f"[bench] ({n}/{total}) {name}: {time.time() - start:.0f} s; "
        f"forget acc {v['forget_acc']:.2f}, neighbour acc {v['neighbor_acc']:.2f}, "
        f"KL {v['kl_neighbor']:.4f}, steps {v['steps']:.0f}")


def run_cells(cells: Cells, todo: list[Todo], total: int, log: Log = _log.info) -> None:
    """The cells of `todo` one after another in this process."""
    for entry, seed, n in todo:
        try:
            run_one(cells, entry, seed, n, total, log)
        except Exception as exc:
            if not _expected(exc):
                log(f"[bench] {cell_name(entry, seed)} failed:\n{traceback.format_exc()}")
            raise cell_failure([cell_name(entry, seed)], exc) from exc


def cell_failure(names: list[str], exc: BaseException) -> AgloraError:
    """The one error of a failed cell, naming it (all the cells in flight when a worker process
    died: which of them killed it is not known)."""
    which = f"cell {names[0]}" if len(names) == 1 else f"cells {', '.join(names)}"
    if isinstance(exc, BrokenProcessPool):
        reason = (f"a worker process stopped abruptly while {'it' if len(names) == 1 else 'they'}"
                  " ran (killed, or out of memory?)")
    elif isinstance(exc, AgloraError):
        reason = str(exc)
    elif disk_problem(exc):
        reason = disk_problem(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return AgloraError(f"bench {which} failed: {reason}. The finished cells are kept: rerun the "
                       "same command to finish the rest")


def run_pool(setup: PoolSetup, todo: list[Todo], total: int, jobs: int, threads: int,
             log: Log = _log.info) -> None:
    """The cells of `todo` in a pool of `jobs` spawned processes at `threads` threads each."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    relay = _Relay(queue, log)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx,
                               initializer=_init_worker, initargs=(threads, queue, setup))
    failed: tuple[list[str], BaseException] | None = None
    try:
        futures: dict[Future, str] = {
            pool.submit(_pool_task, entry, seed, n, total): cell_name(entry, seed)
            for entry, seed, n in todo}
        for future in as_completed(futures):
            if future.cancelled() or future.exception() is None or failed is not None:
                continue
            exc = future.exception()
            names = [futures[future]]
            if isinstance(exc, BrokenProcessPool):  # every unfinished cell gets this one
                names = [c for c in relay.started if c not in _finished(futures)] or names
            failed = (names, exc)
            for f in futures:
                f.cancel()  # those not yet handed to a worker
            if not _expected(exc) and not isinstance(exc, BrokenProcessPool):
                log(f"[bench] {names[0]} failed:\n{_remote_traceback(exc)}")
            running = [c for f, c in futures.items() if c in relay.started and not f.done()]
            if running:
                log(f"[bench] {names[0]} failed; waiting for the running cells "
                    f"({', '.join(running)}) to finish, then stopping")
    except BaseException:  # an interrupt: stop the workers now; their cells are lost
        _stop_workers(pool)
        relay.stop(timeout=5)
        raise
    pool.shutdown(wait=True)
    relay.stop()  # after the workers exited: every record they sent has arrived
    if failed is not None:
        raise cell_failure(*failed) from failed[1]


def _expected(exc: BaseException) -> bool:
    """An input problem or a full or read-only disk: one line, no traceback."""
    return isinstance(exc, AgloraError) or disk_problem(exc) is not None


def _finished(futures: dict[Future, str]) -> set[str]:
    return {name for f, name in futures.items()
            if f.done() and not f.cancelled() and f.exception() is None}


def _remote_traceback(exc: BaseException) -> str:
    """The worker's traceback (concurrent.futures chains it as the cause), else this one's."""
    cause = exc.__cause__
    if cause is not None and type(cause).__name__ == "_RemoteTraceback":
        return str(cause).strip()
    return "".join(traceback.format_exception(exc)).strip()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()


class _Relay:
    """In the parent: a thread that hands the workers' log records to the bench's `log`
    (warnings and errors to the `aglora` logger, at their level) and notes which cells have
    started (the `bench_cell` of their records)."""

    def __init__(self, queue, log: Log) -> None:
        self.queue = queue
        self.log = log
        self.started: list[str] = []
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while (record := self.queue.get()) is not None:
            cell = getattr(record, "bench_cell", None)
            if cell is not None and cell not in self.started:
                self.started.append(cell)
            if record.levelno >= logging.WARNING:
                _log.handle(record)
            else:
                self.log(record.getMessage())

    def stop(self, timeout: float | None = None) -> None:
        self.queue.put(None)
        self.thread.join(timeout)
        if self.thread.is_alive():  # a worker killed while writing can leave the queue stuck
            self.queue.cancel_join_thread()
        else:
            self.queue.close()


# In a worker process: set by the initializer; the cells' inputs, built on the first cell.
_SETUP: PoolSetup | None = None
_CELLS: Cells | None = None


def _init_worker(threads: int, queue, setup: PoolSetup) -> None:
    global _SETUP
    torch.set_num_threads(threads)
    logger = logging.getLogger("aglora")
    logger.handlers[:] = [QueueHandler(queue)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    _SETUP = setup


def _worker_cells() -> Cells:
    global _CELLS
    if _CELLS is None:
        s = _SETUP
        assert s is not None, "not in a bench worker process"
        if s.model_tok is not None:
            model, tok = s.model_tok
        else:
            from aglora.model.load import load_model
            model, tok = load_model(s.cfg.settings.run.model)
        stats, scores, base_side = read_shared(s.out)
        _CELLS = Cells(model, tok, s.concept, s.probes, base_side, stats, scores, s.cfg, s.out,
                       s.inputs)
    return _CELLS


def _pool_task(entry: MethodEntry, seed: int, n: int, total: int) -> None:
    name = cell_name(entry, seed)

    def log(msg: str) -> None:
        _log.info(msg, extra={"bench_cell": name})
    run_one(_worker_cells, entry, seed, n, total, log)


def _quiet(log: Log, name: str) -> Log:
    """A cell's own lines, naming the cell; per-step training lines every 5 steps only (cells
    print a summary line)."""
    def inner(msg: str) -> None:
        parts = msg.split()
        if "step" in parts:
            i = parts.index("step")
            if i + 1 < len(parts) and parts[i + 1].isdigit() and int(parts[i + 1]) % 5:
                return
        log(f"[bench] {name}: {msg}")
    return inner
