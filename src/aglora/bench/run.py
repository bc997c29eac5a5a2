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

Resumable, trusting nothing (`aglora.runtime.hashes`): each cell's JSON records the sha256 of
what it read (its settings, the concept spec, its include and probe files, the shared steps'
files) and of its artifact folder; a rerun skips a cell only while all of these match and its
JSON reads back whole, and computes it again otherwise. The shared steps are keyed the same way
(their entries also hash the tensor files beside them), and a damaged entry is computed again.
One process at a time works in the output directory (`aglora.runtime.lock`). `--jobs N` runs N
cells at once in a process pool (`aglora.bench.pool`; their log lines come here).

The evaluation is lighter than `aglora eval` so that all methods fit in the time budget:
likelihood choice on every probe, greedy generation only (forget probes for leaks, neighbours for
fluency and the collapse verdict), KL(base || after) on neighbours against the base model held in
memory, and the relearning attack on one fixed split of the known forget facts for all cells.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aglora.bench.cells import (
    bench_inputs,
    bench_probes,
    cell_json,
    finished_cell,
    shared_base_side,
    shared_scores,
)
from aglora.bench.config import BenchConfig, MethodEntry, load_bench_config, select_entries
from aglora.bench.memory import release_memory
from aglora.bench.pool import Cells, PoolSetup, run_cells, run_pool, threads_per_job
from aglora.bench.table import _cached_seconds, _seeds, write_outputs
from aglora.concepts import ConceptSpec, Probe, load_concept
from aglora.errors import AgloraError
from aglora.runtime.artifacts import read_json, write_text
from aglora.runtime.lock import holding

_log = logging.getLogger("aglora")


def run_bench(config: str | Path, out: Path, methods: str | None = None,
              seeds: int | None = None, overrides: list[str] | None = None,
              force: bool = False, log=_log.info, model_tok: tuple | None = None,
              report_only: bool = False, jobs: int = 1) -> dict:
    """Run every unfinished cell, then write bench.json, bench.md and tradeoff.png.

    `model_tok` gives an already loaded (model, tokenizer) instead of `run.model` (tests; with
    `jobs` > 1 each worker gets a pickled copy). `report_only` runs nothing: it tabulates the
    finished cells of the selected methods whose inputs are unchanged. `jobs` > 1 runs that many
    cells at once in a process pool (`aglora.bench.pool`). A failed cell is an `AgloraError`
    naming it. The output directory is locked while the bench runs (`aglora.runtime.lock`).
    """
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
    concept = load_concept(cfg.settings.run.concept)
    probes = bench_probes(concept, cfg.settings.run)  # every probe file parsed before the model
    out.mkdir(parents=True, exist_ok=True)
    with holding(out):
        _write_config(cfg, out)
        if report_only:
            return _report(cfg, entries, n_seeds, concept, out, log)
        return _run(Bench(cfg, entries, n_seeds, concept, probes, out), force, log, model_tok,
                    jobs)


@dataclass
class Bench:
    """One bench: its settings, the selected entries and seeds, its data and directory."""

    cfg: BenchConfig
    entries: list[MethodEntry]
    n_seeds: int
    concept: ConceptSpec
    probes: list[Probe]
    out: Path


def _write_config(cfg: BenchConfig, out: Path) -> None:
    import yaml
    write_text(out / "bench_config.yaml",
               yaml.safe_dump({**cfg.raw, "methods": [
                   {"method": e.method, "label": e.label, "set": e.overrides}
                   for e in cfg.entries]}, sort_keys=False))


def _report(cfg: BenchConfig, entries: list[MethodEntry], n_seeds: int, concept: ConceptSpec,
            out: Path, log) -> dict:
    """--report-only: tabulate the cells a rerun would skip; say how many were left out."""
    shared = {"record_seconds": _cached_seconds(out / "shared" / "scores.json"),
              "base_eval_seconds": _cached_seconds(out / "shared" / "base_side.json")}
    common = bench_inputs(out, concept, cfg.settings.run)
    cells, stale = [], 0
    for entry, seed in _order(entries, n_seeds):
        cell, why = finished_cell(cfg, out, entry, seed, common)
        if cell is not None:
            cells.append(cell)
        elif why != "not run yet":
            stale += 1
            log(f"[bench] {entry.label} seed {seed}: left out ({why}); rerun without "
                "--report-only to compute it again")
    result = write_outputs(out, cfg, entries, n_seeds, shared, cells)
    log(f"[bench] wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'tradeoff.png'} "
        f"from {len(result['cells'])} finished cells" + (f" ({stale} left out)" if stale else ""))
    return result


def _order(entries: list[MethodEntry], n_seeds: int) -> list[tuple[MethodEntry, int]]:
    """Every cell, seed-major: an interrupted bench has every method at its first seeds."""
    return sorted(((e, s) for e in entries for s in _seeds(e, n_seeds)), key=lambda es: es[1])


def _run(b: Bench, force: bool, log, model_tok: tuple | None, jobs: int) -> dict:
    total_start = time.time()
    run = b.cfg.settings.run
    from aglora.model.load import load_model, resolve_device
    resolve_device(run.model.device)
    model, tok = model_tok if model_tok is not None else load_model(run.model)
    stats, scores, record_s = shared_scores(model, tok, b.concept, run, b.out, log)
    base_side, base_s = shared_base_side(model, tok, b.probes, b.cfg.settings, b.out, log)
    shared = {"record_seconds": record_s, "base_eval_seconds": base_s,
              "n_probes": len(b.probes), "jobs": jobs}
    common = bench_inputs(b.out, b.concept, run)  # after the shared steps: their files too
    order = _order(b.entries, b.n_seeds)
    todo, cells = [], {}
    for n, (entry, seed) in enumerate(order, 1):
        cell, why = (None, "--force") if force else finished_cell(b.cfg, b.out, entry, seed,
                                                                   common)
        if cell is not None:
            log(f"[bench] ({n}/{len(order)}) {entry.label} seed {seed}: done before, skipped")
            cells[entry.label, seed] = cell
            continue
        if why not in ("not run yet", "--force"):
            log(f"[bench] ({n}/{len(order)}) {entry.label} seed {seed}: computed again ({why})")
        todo.append((entry, seed, n))
    if jobs > 1 and todo:
        threads = threads_per_job(jobs, torch.get_num_threads())
        log(f"[bench] {len(todo)} cell(s) to run, {min(jobs, len(todo))} at a time in worker "
            f"processes, {threads} thread(s) each")
        # The workers load their own model (or get the caller's); this one is not needed now.
        del model, tok, stats, scores, base_side
        release_memory()
        run_pool(PoolSetup(b.cfg, b.concept, b.probes, b.out, common, model_tok), todo,
                 len(order), jobs, threads, log=log)
    elif todo:
        run_cells(Cells(model, tok, b.concept, b.probes, base_side, stats, scores, b.cfg, b.out,
                        common), todo, len(order), log=log)
    for entry, seed, _ in todo:  # as the workers wrote them
        cells[entry.label, seed] = read_json(cell_json(b.out, entry, seed))
    shared["session_seconds"] = time.time() - total_start
    result = write_outputs(b.out, b.cfg, b.entries, b.n_seeds, shared,
                           [cells[e.label, s] for e, s in order])
    log(f"[bench] wrote {b.out / 'bench.md'}, {b.out / 'bench.json'}, {b.out / 'tradeoff.png'} "
        f"({shared['session_seconds'] / 60:.1f} min this session)")
    return result
