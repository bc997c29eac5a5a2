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

Resumable: a cell whose JSON exists with the same settings is skipped. `--jobs N` runs N cells at
once in a process pool (`aglora.bench.pool`; their log lines come here). The evaluation is lighter
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

from aglora.bench.cells import bench_probes, cell_done, shared_base_side, shared_scores
from aglora.bench.config import load_bench_config, select_entries
from aglora.bench.memory import release_memory
from aglora.bench.pool import Cells, PoolSetup, run_cells, run_pool, threads_per_job
from aglora.bench.table import _cached_seconds, _seeds, write_outputs
from aglora.concepts import load_concept
from aglora.errors import AgloraError
from aglora.runtime.artifacts import write_text

_log = logging.getLogger("aglora")


def run_bench(config: str | Path, out: Path, methods: str | None = None,
              seeds: int | None = None, overrides: list[str] | None = None,
              force: bool = False, log=_log.info, model_tok: tuple | None = None,
              report_only: bool = False, jobs: int = 1) -> dict:
    """Run every unfinished cell, then write bench.json, bench.md and tradeoff.png.

    `model_tok` gives an already loaded (model, tokenizer) instead of `run.model` (tests; with
    `jobs` > 1 each worker gets a pickled copy). `report_only` runs nothing: it tabulates the
    finished cells of the selected methods. `jobs` > 1 runs that many cells at once in a
    process pool (`aglora.bench.pool`). A failed cell is an `AgloraError` naming it.
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
    order = sorted(((e, s) for e in entries for s in _seeds(e, n_seeds)), key=lambda es: es[1])
    todo = []
    for n, (entry, seed) in enumerate(order, 1):
        if not force and cell_done(cfg, out, entry, seed):
            log(f"[bench] ({n}/{len(order)}) {entry.label} seed {seed}: done before, skipped")
        else:
            todo.append((entry, seed, n))
    if jobs > 1 and todo:
        threads = threads_per_job(jobs, torch.get_num_threads())
        log(f"[bench] {len(todo)} cell(s) to run, {min(jobs, len(todo))} at a time in worker "
            f"processes, {threads} thread(s) each")
        # The workers load their own model (or get the caller's); this one is not needed now.
        del model, tok, stats, scores, base_side
        release_memory()
        run_pool(PoolSetup(cfg, concept, probes, out, model_tok), todo, len(order), jobs,
                 threads, log=log)
    elif todo:
        run_cells(Cells(model, tok, concept, probes, base_side, stats, scores, cfg, out), todo,
                  len(order), log=log)
    shared["session_seconds"] = time.time() - total_start
    result = write_outputs(out, cfg, entries, n_seeds, shared)
    log(f"[bench] wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'tradeoff.png'} "
        f"({shared['session_seconds'] / 60:.1f} min this session)")
    return result
