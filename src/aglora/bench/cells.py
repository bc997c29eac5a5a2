"""One bench cell (a method x seed) and what every cell shares.

The shared steps run once and are cached under the bench's `shared/`: record + score of the
activation-guided neurons, and the base model's side of the evaluation. A cell applies its
method to a fresh copy of the base, measures the after side with the light evaluation (greedy
generations only), assembles the metrics with `pipeline.eval.metrics.summarise`, and runs the
relearning attack on one fixed split of the known forget facts for all cells.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch
from torch import nn

from aglora.bench.config import BenchConfig, BenchSettings, MethodEntry
from aglora.bench.memory import PeakMemory, release_memory
from aglora.concepts import ConceptSpec, Probe, tofu_files
from aglora.config import (
    RunConfig,
)
from aglora.methods import apply_method
from aglora.methods.base import MethodInputs
from aglora.model.adapter import merged_copy
from aglora.model.identity import weights_digest
from aglora.pipeline.eval.sides import SideResult, kl_between
from aglora.runtime.artifacts import (
    load_tensors,
    read_json,
    save_tensors,
)
from aglora.runtime.cache import cache_key, cached_json
from aglora.runtime.hashes import (
    Hashes,
    changed_artifacts,
    changed_inputs,
    file_hashes,
    path_hashes,
    read_result,
)
from aglora.settings import to_dict

_log = logging.getLogger("aglora")


def bench_probes(concept: ConceptSpec, run: RunConfig) -> list[Probe]:
    from aglora.pipeline.run import concept_eval_probes
    return concept_eval_probes(concept, run.eval)


def measure_side(model: nn.Module, tok, probes: list[Probe], s: BenchSettings, label: str):
    """Likelihood scores on every probe and one greedy generation on the generating splits."""
    from aglora.pipeline.eval.sides import measure
    ecfg = dataclasses.replace(s.run.eval, n_samples=0, sample_splits=[])
    gen_mask = [p.split in s.eval.generate_splits for p in probes]
    return measure(model, tok, probes, ecfg, gen_mask, label)


def cell_metrics(probes: list[Probe], base, after, patterns: list[str]) -> dict:
    """Group metrics per split and per forget family, fluency and the collapse verdict."""
    from aglora.pipeline.eval.metrics import summarise
    return summarise(probes, base, after, patterns)


def relearn_cell(un, tok, probes: list[Probe], base, after, s: BenchSettings) -> dict:
    """Relearning attack on a fixed split of the base-known forget facts (same for all cells)."""
    from aglora.model.adapter import standalone_copy
    from aglora.pipeline.eval.relearn import relearn_attack
    ec = s.eval
    if ec.relearn_steps <= 0:
        return {}
    return relearn_attack(standalone_copy(un.after), tok, probes, base.scores, after.scores,
                          ec.relearn_steps, ec.relearn_lr, ec.relearn_batch_size, seed=0,
                          score_batch_size=s.run.eval.batch_size)


def shared_scores(model: nn.Module, tok, concept: ConceptSpec, run: RunConfig, out: Path,
                  log=_log.info) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """(activation statistics, AG scores, seconds spent) — cached under shared/."""
    from aglora.pipeline.record import record
    from aglora.pipeline.score import compute_scores
    shared = out / "shared"
    key = cache_key({"concept": run.concept, "items": file_hashes(concept.item_files()),
                     "score": to_dict(run.score), "mask_seed": run.mask.seed,
                     "model": weights_digest(model)})

    def compute() -> dict:
        log("[bench] recording and scoring the concept's neurons (once)")
        start = time.time()
        stats = record(model, tok, concept.forget, concept.retain, run.score.batch_size)
        sc = run.score
        scores = compute_scores(stats, sc.scorer, sc.eps, sc.retain_weight, run.mask.seed)
        save_tensors(shared / "activations.safetensors", stats)
        save_tensors(shared / "scores.safetensors", scores)
        return {"seconds": time.time() - start}

    meta = cached_json(shared / "scores.json", compute, key=key, artifacts=SHARED_TENSORS)
    return (load_tensors(shared / "activations.safetensors"),
            load_tensors(shared / "scores.safetensors"), meta["seconds"])


def shared_base_side(model: nn.Module, tok, probes: list[Probe], s: BenchSettings, out: Path,
                     log=_log.info):
    """The base model's side of every evaluation, computed once and cached."""
    key = cache_key({"probes": [p.to_dict() for p in probes], "eval": to_dict(s.run.eval),
                     "gen": s.eval.generate_splits, "model": weights_digest(model)})

    def compute() -> dict:
        log(f"[bench] evaluating the base model on {len(probes)} probes (once)")
        start = time.time()
        side = measure_side(model, tok, probes, s, "base")
        return {"seconds": time.time() - start, "scores": side.scores, "lengths": side.lengths,
                "generations": side.generations}

    data = cached_json(out / "shared" / "base_side.json", compute, key=key)
    return SideResult(data["scores"], data["lengths"], data["generations"]), data["seconds"]


SHARED_TENSORS = ("activations.safetensors", "scores.safetensors")  # beside shared/scores.json
SHARED_FILES = (*(f"shared/{name}" for name in SHARED_TENSORS), "shared/base_side.json")


def read_shared(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                     SideResult]:
    """(activation statistics, AG scores, base side) as `shared_scores` and `shared_base_side`
    left them under out/shared/ (what a bench worker process reads)."""
    shared = out / "shared"
    data = read_json(shared / "base_side.json")["value"]
    return (load_tensors(shared / "activations.safetensors"),
            load_tensors(shared / "scores.safetensors"),
            SideResult(data["scores"], data["lengths"], data["generations"]))


def cell_json(out: Path, entry: MethodEntry, seed: int) -> Path:
    """Where a cell's result lives: cells/<label>/seed<K>.json (its artifact: beside, no suffix)."""
    return out / "cells" / entry.label / f"seed{seed}.json"


def bench_inputs(out: Path, concept: ConceptSpec, run: RunConfig) -> Hashes:
    """sha256 of what every cell reads: the concept spec, its include and probe files (TOFU's
    too when the evaluation includes them) and the shared steps' files under out/shared/."""
    files = concept.input_files() + (tofu_files() if run.eval.include_tofu else [])
    return {**file_hashes(files), **path_hashes(out, SHARED_FILES)}


def cell_inputs(cfg: BenchConfig, entry: MethodEntry, seed: int, common: Hashes) -> Hashes:
    """What one cell reads: its settings (`cell_key`) and the inputs every cell reads."""
    return {"config": cell_key(cfg, entry, seed), **common}


def with_hashes(cell: dict, out: Path, entry: MethodEntry, seed: int, inputs: Hashes) -> dict:
    """`cell` with the hashes a rerun checks: its inputs, and its artifact folder (if any)."""
    rel = cell_json(out, entry, seed).with_suffix("").relative_to(out).as_posix()
    return {**cell, "inputs": inputs, "artifacts": {
        k: v for k, v in path_hashes(out, [rel]).items() if v is not None}}


def finished_cell(cfg: BenchConfig, out: Path, entry: MethodEntry, seed: int,
               common: Hashes) -> tuple[dict | None, str | None]:
    """(the cell's result, None) when a rerun may skip it, else (None, why it runs): not run
    yet, its JSON damaged, its artifact changed, or an input changed since it ran."""
    cell, damaged = read_result(cell_json(out, entry, seed))
    if cell is None:
        return None, damaged or "not run yet"
    why = (changed_inputs(cell.get("inputs"), cell_inputs(cfg, entry, seed, common))
           or changed_artifacts(cell.get("artifacts"), out))
    return (None, why) if why else (cell, None)


def cell_key(cfg: BenchConfig, entry: MethodEntry, seed: int) -> str:
    s = cfg.cell_settings(entry, seed)
    d = to_dict(s)
    d.pop("seeds")
    return cache_key({"method": entry.method, "settings": d}, length=16)


def run_cell(model: nn.Module, tok, concept: ConceptSpec, probes: list[Probe], base_side,
             stats: dict, scores: dict, cfg: BenchConfig, entry: MethodEntry, seed: int,
             cell_dir: Path, log=_log.info) -> dict:
    s = cfg.cell_settings(entry, seed)
    device = next(model.parameters()).device
    # The working copy of the base is made before the memory measurement: peak memory is what
    # the method needs beyond the loaded base model and one copy of it.
    work = copy.deepcopy(model)
    inp = MethodInputs(cfg=s.run, concept=concept, scores=scores["score"],
                       retain_mean=stats.get("retain.act_mean"), rmu=s.rmu,
                       act_edit=s.act_edit, out_dir=cell_dir, log=log, work=work)
    del work
    release_memory()
    start = time.time()
    with PeakMemory(device) as mem:
        un = apply_method(entry.method, model, tok, inp)
    method_seconds = time.time() - start
    start = time.time()
    after_model = merged_copy(un.after)  # adapters folded in: no LoRA overhead in evaluation
    after = measure_side(after_model, tok, probes, s, f"after {entry.label}")
    metrics = cell_metrics(probes, base_side, after, concept.leak_patterns)
    metrics["kl_neighbor"] = kl_between(after_model, model, tok,
                                        [p for p in probes if p.split == "neighbor"],
                                        s.run.eval.batch_size)
    del after_model
    eval_seconds = time.time() - start
    start = time.time()
    metrics["relearn"] = relearn_cell(un, tok, probes, base_side, after, s)
    relearn_seconds = time.time() - start
    cell = {
        "method": entry.method, "label": entry.label, "seed": seed,
        "key": cell_key(cfg, entry, seed), "metrics": metrics,
        "train": {"steps": un.train.steps, "stopped_early": un.train.stopped_early,
                  "seconds": un.train.seconds, "history": un.train.history},
        "cost": {"method_seconds": method_seconds, "eval_seconds": eval_seconds,
                 "relearn_seconds": relearn_seconds, "peak_memory_bytes": mem.peak,
                 "trainable_params": un.trainable_params,
                 "effective_params": un.effective_params,
                 "artifact_bytes": un.artifact_bytes, "kind": un.kind,
                 "n_selected": un.mask.n_selected if un.mask is not None else None},
    }
    del un
    release_memory()
    return cell
