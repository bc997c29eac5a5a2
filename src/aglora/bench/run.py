"""`aglora bench`: every method on the same concept, probes and step budget, over several seeds.

    aglora bench src/aglora/data/configs/bench.yaml --out runs/bench [--methods a,b] [--seeds N]
                 [--jobs N]

Layout of the output directory:

    bench_config.yaml        the resolved configuration
    shared/                  computed once, reused by every cell (and by reruns):
      activations.safetensors, scores.safetensors   record + score of the AG neurons
      base_side.json         the base model's scores and generations on every probe
    cells/<label>/seed<N>.json   one method x seed: metrics, cost (written atomically)
    cells/<label>/seed<N>/   its artifact (adapter or mask)
    bench.json, bench.md, tradeoff.png
    logs/worker-K.log        with --jobs N: what each worker process printed

Resumable: a cell whose JSON exists with the same settings is skipped. `--jobs N` runs N cells at
once in worker processes (`aglora.bench.workers`). The evaluation is lighter
than `aglora eval` so that all methods fit in the time budget: likelihood choice on every probe,
greedy generation only (forget probes for leaks, neighbours for fluency and the collapse
verdict), KL(base || after) on neighbours against the base model held in memory, and the
relearning attack on one fixed split of the known forget facts for all cells.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from aglora.bench import workers as bench_workers
from aglora.bench.cells import bench_probes, cell_key, run_cell, shared_base_side, shared_scores
from aglora.bench.config import BenchConfig, load_bench_config, select_entries
from aglora.bench.table import _cached_seconds, _seeds, cell_values, write_outputs
from aglora.concepts import ConceptSpec, Probe, load_concept
from aglora.errors import AgloraError
from aglora.runtime.artifacts import (
    read_json,
    write_json,
    write_text,
)

_log = logging.getLogger("aglora")


def run_bench(config: str | Path, out: Path, methods: str | None = None,
              seeds: int | None = None, overrides: list[str] | None = None,
              force: bool = False, log=_log.info, model_tok: tuple | None = None,
              report_only: bool = False, jobs: int = 1, worker: bool = False) -> dict | None:
    """Run every unfinished cell, then write bench.json, bench.md and tradeoff.png.

    `model_tok` gives an already loaded (model, tokenizer) instead of `run.model` (tests).
    `report_only` runs nothing: it tabulates the finished cells of the selected methods.
    `jobs` > 1 runs that many cells at once in worker processes (`aglora.bench.workers`);
    `worker` marks such a process: it runs the cells it can claim and writes no tables.
    """
    import yaml
    cfg = load_bench_config(config, overrides)
    entries = select_entries(cfg, methods)
    n_seeds = seeds if seeds is not None else cfg.settings.seeds
    if n_seeds < 1:
        raise AgloraError(f"--seeds {n_seeds}: need at least 1")
    if jobs < 1:
        raise AgloraError(f"--jobs {jobs}: need at least 1")
    out = Path(out)
    from aglora.pipeline.run import check_out_dir
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "bench_config.yaml",
               yaml.safe_dump({**cfg.raw, "methods": [
                   {"method": e.method, "label": e.label, "set": e.overrides}
                   for e in cfg.entries]}, sort_keys=False))
    run = cfg.settings.run
    if report_only:
        shared = {"record_seconds": _cached_seconds(out / "shared" / "scores.json"),
                  "base_eval_seconds": _cached_seconds(out / "shared" / "base_side.json")}
        result = write_outputs(out, cfg, entries, n_seeds, shared)
        log(f"[bench] wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'tradeoff.png'} "
            f"from {len(result['cells'])} finished cells")
        return result
    concept = load_concept(run.concept)
    probes = bench_probes(concept, run)  # every probe file parsed before the model loads
    total_start = time.time()
    from aglora.model.load import load_model, resolve_device
    resolve_device(run.model.device)
    model, tok = model_tok if model_tok is not None else load_model(run.model)
    stats, scores, record_s = shared_scores(model, tok, concept, run, out, log)
    base_side, base_s = shared_base_side(model, tok, probes, cfg.settings, out, log)
    shared = {"record_seconds": record_s, "base_eval_seconds": base_s, "n_probes": len(probes),
              "jobs": jobs}
    # Seed-major order: an interrupted bench has every method at its first seeds.
    todo = sorted(((e, s) for e in entries for s in _seeds(e, n_seeds)),
                  key=lambda es: es[1])
    workers: list[bench_workers.Worker] = []
    if jobs > 1 and not worker:
        threads = bench_workers.threads_per_job(jobs, torch.get_num_threads())
        bench_workers.clear_claims(out)
        argv = bench_workers.worker_argv(config, out, methods, seeds, overrides or [], force)
        workers = bench_workers.start_workers(argv, jobs - 1, threads, out)
        torch.set_num_threads(threads)
        log(f"[bench] {jobs} cells at a time, {threads} thread(s) each; worker logs in "
            f"{out / 'logs'}")
    try:
        _run_cells(todo, model, tok, concept, probes, base_side, stats, scores, cfg, out,
                   force, claim=jobs > 1 or worker, log=log)
        bench_workers.wait_workers(workers)
    finally:
        bench_workers.stop_workers(workers)
    if worker:
        return None
    if jobs > 1:
        bench_workers.clear_claims(out)
    shared["session_seconds"] = time.time() - total_start
    result = write_outputs(out, cfg, entries, n_seeds, shared)
    log(f"[bench] wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'tradeoff.png'} "
        f"({shared['session_seconds'] / 60:.1f} min this session)")
    return result



def _run_cells(todo: list, model: nn.Module, tok, concept: ConceptSpec, probes: list[Probe],
               base_side, stats: dict, scores: dict, cfg: BenchConfig, out: Path, force: bool,
               claim: bool, log=_log.info) -> None:
    """Run the unfinished cells of `todo` in order; with `claim`, only those no other process
    has taken (`bench_workers.claim`)."""
    for n, (entry, seed) in enumerate(todo, 1):
        path = out / "cells" / entry.label / f"seed{seed}.json"
        key = cell_key(cfg, entry, seed)
        if path.is_file() and not force and read_json(path).get("key") == key:
            log(f"[bench] ({n}/{len(todo)}) {entry.label} seed {seed}: done"
                f"{' (earlier or by another worker)' if claim else ' before'}, skipped")
            continue
        if claim and not bench_workers.claim(path):
            continue
        log(f"[bench] ({n}/{len(todo)}) {entry.label} seed {seed}: running")
        start = time.time()
        cell = run_cell(model, tok, concept, probes, base_side, stats, scores, cfg, entry, seed,
                        out / "cells" / entry.label / f"seed{seed}", log=_quiet(log))
        write_json(path, cell)
        v = cell_values(cell)
        log(f"[bench] ({n}/{len(todo)}) {entry.label} seed {seed}: {time.time() - start:.0f} s; "
            f"forget acc {v['forget_acc']:.2f}, neighbour acc {v['neighbor_acc']:.2f}, "
            f"KL {v['kl_neighbor']:.4f}, steps {v['steps']:.0f}")


def _quiet(log):
    """Per-step training lines every 5 steps only (cells print a summary line)."""
    def inner(msg: str) -> None:
        parts = msg.split()
        if "step" in parts:
            i = parts.index("step")
            if i + 1 < len(parts) and parts[i + 1].isdigit() and int(parts[i + 1]) % 5:
                return
        log(msg)
    return inner
