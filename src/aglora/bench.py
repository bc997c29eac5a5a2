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
once in worker processes (`aglora.bench_workers`). The evaluation is lighter
than `aglora eval` so that all methods fit in the time budget: likelihood choice on every probe,
greedy generation only (forget probes for leaks, neighbours for fluency and the collapse
verdict), KL(base || after) on neighbours against the base model held in memory, and the
relearning attack on one fixed split of the known forget facts for all cells.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import json
import math
import os
import platform
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aglora import bench_workers
from aglora.act_edit import ActEditConfig
from aglora.concepts import ConceptSpec, Probe, load_concept, load_tofu
from aglora.config import (
    RunConfig,
    _build,
    _f,
    apply_overrides,
    config_to_dict,
    load_yaml,
)
from aglora.errors import AgloraError
from aglora.evaluate import kl_between
from aglora.io import load_tensors, read_json, save_tensors, write_json, write_text, write_with
from aglora.lora import merged_copy
from aglora.methods import METHODS, MethodInputs, apply_method, get_method
from aglora.rmu import RmuConfig

SPLITS_GEN = ("forget", "neighbor")


# ---- configuration -----------------------------------------------------------------------------
@dataclass
class BenchEvalConfig:
    generate_splits: list[str] = _f(list(SPLITS_GEN), "splits that get one greedy generation "
                                                      "(forget: leaks; neighbor: fluency)")
    relearn_steps: int = _f(10, "steps of the relearning attack per cell (0 = off)")
    relearn_lr: float = _f(1e-5, "learning rate of the relearning attack")
    relearn_batch_size: int = _f(4, "batch size of the relearning attack")


@dataclass
class BenchSettings:
    run: RunConfig = field(default_factory=RunConfig, metadata={
        "help": "the run every method shares: concept, probes, step budget, eval settings"})
    seeds: int = _f(3, "seeds per method (train.seed = 0..seeds-1)")
    rmu: RmuConfig = field(default_factory=RmuConfig)
    act_edit: ActEditConfig = field(default_factory=ActEditConfig)
    eval: BenchEvalConfig = field(default_factory=BenchEvalConfig)


@dataclass
class MethodEntry:
    """One row of the table: a registered method and config overrides (a 'setting')."""

    method: str
    label: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class BenchConfig:
    raw: dict[str, Any]          # the YAML mapping without 'methods' (overrides apply here)
    settings: BenchSettings
    entries: list[MethodEntry]

    def cell_settings(self, entry: MethodEntry, seed: int) -> BenchSettings:
        data = apply_overrides(copy.deepcopy(self.raw),
                               [*entry.overrides, f"run.train.seed={seed}"])
        return _build(BenchSettings, data)


def _entries(raw: Any) -> list[MethodEntry]:
    if raw is None:
        return [MethodEntry(m, m) for m in METHODS]
    if not isinstance(raw, list):
        raise AgloraError("bench config 'methods' must be a list of method names or mappings "
                          "{method: NAME, label: TEXT, set: [KEY=VALUE, ...]}")
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            raise AgloraError(f"bench config methods[{i}]: expected a name or a mapping with "
                              "'method'")
        unknown = sorted(set(item) - {"method", "label", "set"})
        if unknown:
            raise AgloraError(f"bench config methods[{i}]: unknown key '{unknown[0]}' (known: "
                              "label, method, set)")
        get_method(item["method"])
        sets = item.get("set") or []
        if isinstance(sets, str):
            sets = [sets]
        out.append(MethodEntry(item["method"], str(item.get("label") or item["method"]),
                               [str(s) for s in sets]))
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise AgloraError(f"bench config: label {dup[0]!r} appears twice; give each setting its "
                          "own 'label'")
    return out


def load_bench_config(path: str | Path, overrides: list[str] | None = None) -> BenchConfig:
    data = load_yaml(path)
    run = data.get("run") or {}
    if isinstance(run, dict) and isinstance(run.get("concept"), str):
        concept = run["concept"]
        if not concept.startswith("builtin:") and not Path(concept).is_absolute():
            run["concept"] = str((Path(path).parent / concept).resolve())
    data = apply_overrides(data, overrides or [])
    entries = _entries(data.pop("methods", None))
    settings = _build(BenchSettings, data)
    for e in entries:  # fail now, not after an hour, on a bad per-method override
        BenchConfig(data, settings, entries).cell_settings(e, 0)
    return BenchConfig(data, settings, entries)


def select_entries(cfg: BenchConfig, names: str | None) -> list[MethodEntry]:
    if not names:
        return cfg.entries
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {e.label for e in cfg.entries} | {e.method for e in cfg.entries}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise AgloraError(f"--methods: {bad[0]!r} is not in the bench config; choose from "
                          f"{', '.join(e.label for e in cfg.entries)}")
    return [e for e in cfg.entries if e.label in wanted or e.method in wanted]


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- memory ------------------------------------------------------------------------------------
def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc), so that an RSS
    measurement that starts now is not masked by memory an earlier cell freed but kept."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory above the level at entry while the block runs, in bytes.

    CUDA: torch.cuda.max_memory_allocated. CPU: resident set size sampled every 20 ms (a
    process-wide measure: it includes allocator caches, and misses peaks shorter than 20 ms).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._start = _rss_bytes()
            self._max = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._max = max(self._max, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, _rss_bytes())
            self.peak = self._max - self._start


# ---- evaluation --------------------------------------------------------------------------------
def bench_probes(concept: ConceptSpec, run: RunConfig) -> list[Probe]:
    probes = concept.eval_probes()
    if not probes:
        raise AgloraError(f"{concept.source}: lists no evaluation probes under 'probes:'")
    if run.eval.include_tofu:
        probes += load_tofu(run.eval.tofu_limit)
    return probes


def measure_side(model: nn.Module, tok, probes: list[Probe], s: BenchSettings, label: str):
    """Likelihood scores on every probe and one greedy generation on the generating splits."""
    from aglora.evaluate import measure
    ecfg = dataclasses.replace(s.run.eval, n_samples=0, sample_splits=[])
    gen_mask = [p.split in s.eval.generate_splits for p in probes]
    return measure(model, tok, probes, ecfg, gen_mask, label)


def cell_metrics(probes: list[Probe], base, after, patterns: list[str]) -> dict:
    """Group metrics per split and per forget family, fluency and the collapse verdict."""
    from aglora.evaluate import collapse_verdict, group_indices, group_metrics
    from aglora.generation import distinct_n, repetition
    by_split, by_family = group_indices(probes)
    nb = by_split.get("neighbor", [])

    def flat(side) -> list[str]:
        return [g for i in nb for g in side.generations[i]]

    m = {
        "splits": {s: group_metrics(ix, probes, base, after, patterns)
                   for s, ix in sorted(by_split.items())},
        "families": {k: group_metrics(ix, probes, base, after, patterns)
                     for k, ix in sorted(by_family.items())},
        "distinct2": {"base": distinct_n(flat(base), 2), "after": distinct_n(flat(after), 2)},
        "repetition": {"base": repetition(flat(base), 3), "after": repetition(flat(after), 3)},
    }
    m["verdict"] = collapse_verdict(m)
    return m


def relearn_cell(un, tok, probes: list[Probe], base, after, s: BenchSettings) -> dict:
    """Relearning attack on a fixed split of the base-known forget facts (same for all cells)."""
    from aglora.likelihood import choice_correct, choice_summary, score_options
    from aglora.relearn import finetune, recovered_share, split_attack_set
    ec = s.eval
    known = [i for i, p in enumerate(probes)
             if p.split == "forget" and p.has_choice and choice_correct(base.scores[i])]
    train_idx, held_idx = split_attack_set(known, seed=0)
    if not held_idx or ec.relearn_steps <= 0:
        return {}
    base_acc, base_m = choice_summary([base.scores[i] for i in held_idx])
    after_acc, after_m = choice_summary([after.scores[i] for i in held_idx])
    attacked = un.attack_copy()
    finetune(attacked, tok, [probes[i] for i in train_idx], ec.relearn_steps, ec.relearn_lr,
             ec.relearn_batch_size, seed=0)
    rel_acc, rel_m = choice_summary(score_options(attacked, tok, [probes[i] for i in held_idx],
                                                  s.run.eval.batch_size))
    del attacked
    return {"steps": ec.relearn_steps, "lr": ec.relearn_lr, "n_train": len(train_idx),
            "n_held": len(held_idx),
            "known_accuracy": {"base": base_acc, "after": after_acc, "relearned": rel_acc},
            "margin": {"base": base_m, "after": after_m, "relearned": rel_m},
            "recovered_share": recovered_share(base_acc, after_acc, rel_acc),
            "recovered_share_margin": recovered_share(base_m, after_m, rel_m)}


# ---- shared, computed once ---------------------------------------------------------------------
def shared_scores(model: nn.Module, tok, concept: ConceptSpec, run: RunConfig, out: Path,
                  log=print) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """(activation statistics, AG scores, seconds spent) — cached under shared/."""
    from aglora.record import record
    from aglora.scoring import compute_scores
    key = _key({"concept": run.concept, "score": config_to_dict(run.score),
                "mask_seed": run.mask.seed, "model": config_to_dict(run.model)})
    meta_path = out / "shared" / "scores.json"
    if meta_path.is_file() and read_json(meta_path).get("key") == key:
        meta = read_json(meta_path)
        return (load_tensors(out / "shared" / "activations.safetensors"),
                load_tensors(out / "shared" / "scores.safetensors"), meta["seconds"])
    log("[bench] recording and scoring the concept's neurons (once)")
    start = time.time()
    stats = record(model, tok, concept.forget, concept.retain, run.score.batch_size)
    sc = run.score
    scores = compute_scores(stats, sc.scorer, sc.eps, sc.retain_weight, run.mask.seed)
    seconds = time.time() - start
    save_tensors(out / "shared" / "activations.safetensors", stats)
    save_tensors(out / "shared" / "scores.safetensors", scores)
    write_json(meta_path, {"key": key, "seconds": seconds})
    return stats, scores, seconds


def shared_base_side(model: nn.Module, tok, probes: list[Probe], s: BenchSettings, out: Path,
                     log=print):
    """The base model's side of every evaluation, computed once and cached."""
    from aglora.evaluate import SideResult
    path = out / "shared" / "base_side.json"
    key = _key({"probes": [p.to_dict() for p in probes], "eval": config_to_dict(s.run.eval),
                "gen": s.eval.generate_splits, "model": config_to_dict(s.run.model)})
    if path.is_file():
        data = read_json(path)
        if data.get("key") == key:
            return SideResult(data["scores"], data["lengths"], data["generations"]), data["seconds"]
    log(f"[bench] evaluating the base model on {len(probes)} probes (once)")
    start = time.time()
    side = measure_side(model, tok, probes, s, "base")
    seconds = time.time() - start
    write_json(path, {"key": key, "seconds": seconds, "scores": side.scores,
                      "lengths": side.lengths, "generations": side.generations})
    return side, seconds


# ---- one cell ----------------------------------------------------------------------------------
def cell_key(cfg: BenchConfig, entry: MethodEntry, seed: int) -> str:
    s = cfg.cell_settings(entry, seed)
    d = config_to_dict(s)
    d.pop("seeds")
    return _key({"method": entry.method, "settings": d})


def run_cell(model: nn.Module, tok, concept: ConceptSpec, probes: list[Probe], base_side,
             stats: dict, scores: dict, cfg: BenchConfig, entry: MethodEntry, seed: int,
             cell_dir: Path, log=print) -> dict:
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


# ---- aggregation -------------------------------------------------------------------------------
def _get(d: dict, path: str) -> float:
    for part in path.split("/"):
        if not isinstance(d, dict) or part not in d:
            return float("nan")
        d = d[part]
    try:
        return float(d)
    except (TypeError, ValueError):
        return float("nan")


def cell_values(cell: dict) -> dict[str, float]:
    """The flat numbers of one cell that the table summarises."""
    m = cell["metrics"]
    v = {
        "forget_acc": _get(m, "splits/forget/known_accuracy/after"),
        "forget_margin": _get(m, "splits/forget/margin/after"),
        "forget_leak": _get(m, "splits/forget/leak_rate/after"),
        "neighbor_acc": _get(m, "splits/neighbor/known_accuracy/after"),
        "utility_acc": _get(m, "splits/utility/known_accuracy/after"),
        "kl_neighbor": _get(m, "kl_neighbor"),
        "distinct2": _get(m, "distinct2/after"),
        "degenerate": float(bool(m.get("verdict", {}).get("degenerate"))),
        "relearn": _get(m, "relearn/recovered_share"),
        "relearn_margin": _get(m, "relearn/recovered_share_margin"),
        "steps": float(cell["train"]["steps"]),
        "method_seconds": float(cell["cost"]["method_seconds"]),
        "eval_seconds": float(cell["cost"]["eval_seconds"]),
        "peak_mb": cell["cost"]["peak_memory_bytes"] / 2**20,
        "trainable_params": float(cell["cost"]["trainable_params"]),
        "artifact_bytes": float(cell["cost"]["artifact_bytes"]),
    }
    for fam, g in m.get("families", {}).items():
        if fam.startswith("forget/"):
            name = fam.split("/", 1)[1]
            v[f"fam/{name}/acc"] = _get(g, "known_accuracy/after")
            v[f"fam/{name}/leak"] = _get(g, "leak_rate/after")
    return v


def _stats(xs: list[float]) -> dict:
    xs = [x for x in xs if x == x]
    if not xs:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": len(xs), "min": min(xs), "max": max(xs)}


def summarise(cells: list[dict]) -> dict[str, dict]:
    """Per label: method, seeds, and mean/sd/min/max of every cell value."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        by_label[c["label"]].append(c)
    out = {}
    for label, cs in by_label.items():
        vals = [cell_values(c) for c in cs]
        keys = sorted({k for v in vals for k in v})
        out[label] = {"method": cs[0]["method"], "seeds": sorted(c["seed"] for c in cs),
                      "values": {k: _stats([v.get(k, float("nan")) for v in vals])
                                 for k in keys}}
    return out


def base_values(cells: list[dict]) -> dict[str, float]:
    """The base model's numbers (identical in every cell: the base side is shared)."""
    m = cells[0]["metrics"]
    v = {"forget_acc": _get(m, "splits/forget/known_accuracy/base"),
         "forget_leak": _get(m, "splits/forget/leak_rate/base"),
         "neighbor_acc": _get(m, "splits/neighbor/known_accuracy/base"),
         "utility_acc": _get(m, "splits/utility/known_accuracy/base"),
         "chance": _get(m, "splits/forget/chance"),
         "n_known_forget": _get(m, "splits/forget/n_known"),
         "n_known_neighbor": _get(m, "splits/neighbor/n_known"),
         "n_known_utility": _get(m, "splits/utility/n_known"),
         "distinct2": _get(m, "distinct2/base")}
    for fam, g in m.get("families", {}).items():
        if fam.startswith("forget/"):
            name = fam.split("/", 1)[1]
            v[f"fam/{name}/acc"] = _get(g, "known_accuracy/base")
            v[f"fam/{name}/leak"] = _get(g, "leak_rate/base")
            v[f"fam/{name}/n_known"] = _get(g, "n_known")
    return v


def _pm(st: dict, digits: int = 2, scale: float = 1.0) -> str:
    if not st or st.get("n", 0) == 0:
        return "–"
    mean = st["mean"] * scale
    if st["n"] == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {st['sd'] * scale:.{digits}f}"


def _count(x: float) -> str:
    if x != x:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _bytes(x: float) -> str:
    if x != x:
        return "–"
    for unit, div in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x:.0f} B"


def bench_markdown(summary: dict[str, dict], base: dict[str, float], header: str) -> str:
    lines = [header, ""]
    lines += [
        "| method | seeds | forget acc ↓ | forget leak ↓ | neighbour acc ↑ | utility acc ↑ | "
        "KL neighbours ↓ | collapsed | relearn recovered ↓ | steps | train s | peak MB | "
        "trainable params | artifact |",
        "|" + " --- |" * 14,
        f"| base | – | {base['forget_acc']:.2f} (chance {base['chance']:.2f}) | "
        f"{base['forget_leak']:.2f} | {base['neighbor_acc']:.2f} | {base['utility_acc']:.2f} | "
        "0 | – | – | – | – | – | – | – |",
    ]
    for label, row in summary.items():
        v = row["values"]
        collapsed = v["degenerate"]
        lines.append(
            f"| {label} | {v['forget_acc']['n']} | {_pm(v['forget_acc'])} | "
            f"{_pm(v['forget_leak'])} | {_pm(v['neighbor_acc'])} | {_pm(v['utility_acc'])} | "
            f"{_pm(v['kl_neighbor'], 4)} | "
            f"{round(collapsed['mean'] * collapsed['n'])}/{collapsed['n']} | "
            f"{_pm(v['relearn'])} | {_pm(v['steps'], 0)} | {_pm(v['method_seconds'], 0)} | "
            f"{_pm(v['peak_mb'], 0)} | {_count(v['trainable_params']['mean'])} | "
            f"{_bytes(v['artifact_bytes']['mean'])} |")
    fams = sorted({k.split("/")[1] for k in base if k.startswith("fam/")})
    if fams:
        lines += ["", "Forget probes per family: known accuracy / greedy leak rate after "
                  "(mean over seeds; base first).", ""]
        lines.append("| method | " + " | ".join(
            f"{f} (n={base.get(f'fam/{f}/n_known', float('nan')):.0f})" for f in fams) + " |")
        lines.append("|" + " --- |" * (len(fams) + 1))
        lines.append("| base | " + " | ".join(
            f"{base[f'fam/{f}/acc']:.2f} / {base[f'fam/{f}/leak']:.2f}" for f in fams) + " |")
        for label, row in summary.items():
            v = row["values"]
            cells = []
            for f in fams:
                a, lk = v.get(f"fam/{f}/acc", {}), v.get(f"fam/{f}/leak", {})
                cells.append(f"{a.get('mean', float('nan')):.2f} / "
                             f"{lk.get('mean', float('nan')):.2f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Columns: *forget acc* = likelihood-choice accuracy on the forget probes the "
              "base model knows (chance shown in the base row); *leak* = share of greedy "
              "generations matching a leak pattern; *neighbour/utility acc* = accuracy on the "
              "known neighbour/utility probes; *KL neighbours* = KL(base ‖ after) per content "
              "token on neighbour sequences; *collapsed* = cells the collapse verdict called "
              "degenerate; *relearn recovered* = share of the forget accuracy gap that a "
              "full-parameter fine-tune on a quarter of the known forget facts brings back on "
              "the rest; *train s* = wall time of the method (training and its early-stopping "
              "checks, or setup); *peak MB* = peak memory while the method ran, above the loaded "
              "base model and one working copy of it (CPU: sampled RSS after handing freed "
              "memory back to the OS; CUDA: allocated); *artifact* = what ships (adapter "
              "files, changed weights, or the mask). Values: mean ± sample sd over seeds.", ""]
    return "\n".join(lines)


def tradeoff_plot(summary: dict[str, dict], cells: list[dict], base: dict[str, float],
                  path: Path) -> None:
    """Forget accuracy vs neighbour accuracy and vs neighbour KL: one point per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, row) in enumerate(summary.items()):
        v = row["values"]
        color = colors[n % len(colors)]
        seeds = [cell_values(c) for c in cells if c["label"] == label]
        for ax, key in zip(axes, ("neighbor_acc", "kl_neighbor"), strict=True):
            ax.scatter([s["forget_acc"] for s in seeds], [s[key] for s in seeds], color=color,
                       alpha=0.3, s=14)
            ax.errorbar(v["forget_acc"]["mean"], v[key]["mean"], xerr=v["forget_acc"]["sd"],
                        yerr=v[key]["sd"], fmt="o", color=color, label=label, capsize=3)
            ax.annotate(label, (v["forget_acc"]["mean"], v[key]["mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points", color=color)
    for ax in axes:
        ax.axvline(base["chance"], color="grey", ls="--", lw=1)
        ax.set_xlabel("forget known accuracy after (dashed: chance)")
    axes[0].set_ylabel("neighbour known accuracy after (higher = kept)")
    axes[1].set_ylabel("KL(base ‖ after) on neighbours (lower = better)")
    kls = [c for c in (cell_values(c)["kl_neighbor"] for c in cells) if c == c]
    if kls and min(kls) > 0:
        axes[1].set_yscale("log")
    else:
        axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Forgetting vs retention: one point per method (mean ± sd over seeds)")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def machine_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if not torch.cuda.is_available():
        from aglora.hostspeed import speed_index
        info["host_speed"] = speed_index()
    try:
        info["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _session_note(shared: dict) -> str:
    """' (this session: X min wall, N cells at a time)' when the bench ran cells in parallel."""
    jobs = shared.get("jobs", 1)
    if jobs <= 1 or "session_seconds" not in shared:
        return ""
    return (f" (this session: {shared['session_seconds'] / 60:.1f} min of wall time, "
            f"{jobs} cells at a time)")


def write_outputs(out: Path, cfg: BenchConfig, entries: list[MethodEntry], seeds: int,
                  shared: dict) -> dict:
    """Collect every finished cell of the selected entries into bench.json/bench.md/plot."""
    cells = []
    for e in entries:
        for seed in _seeds(e, seeds):
            path = out / "cells" / e.label / f"seed{seed}.json"
            if path.is_file():
                cells.append(read_json(path))
    if not cells:
        raise AgloraError(f"{out}: no finished cell to tabulate")
    summary = summarise(cells)
    base = base_values(cells)
    wall = sum(c["cost"]["method_seconds"] + c["cost"]["eval_seconds"]
               + c["cost"]["relearn_seconds"] for c in cells)
    run = cfg.settings.run
    header = (f"# Benchmark: concept `{run.concept}`, {len(summary)} settings, up to {seeds} "
              f"seeds, step budget {run.train.max_steps} (batch {run.train.batch_size}), "
              f"{len(cells)} cells; sum of cell wall times {wall / 60:.1f} min"
              f"{_session_note(shared)}, shared "
              f"record+score {shared.get('record_seconds', float('nan')):.0f} s and base "
              f"evaluation {shared.get('base_eval_seconds', float('nan')):.0f} s")
    md = bench_markdown(summary, base, header)
    write_text(out / "bench.md", md)
    result = {"config": {"raw": cfg.raw, "entries": [dataclasses.asdict(e) for e in entries],
                         "seeds": seeds},
              "machine": machine_info(), "shared": shared, "base": base, "summary": summary,
              "cells": [{k: v for k, v in c.items() if k != "train"} | {
                  "train": {k: v for k, v in c["train"].items() if k != "history"}}
                  for c in cells]}
    write_json(out / "bench.json", result)
    tradeoff_plot(summary, cells, base, out / "tradeoff.png")
    return result


def _seeds(entry: MethodEntry, seeds: int) -> list[int]:
    return list(range(seeds)) if METHODS[entry.method].seeded else [0]


# ---- the command -------------------------------------------------------------------------------
def run_bench(config: str | Path, out: Path, methods: str | None = None,
              seeds: int | None = None, overrides: list[str] | None = None,
              force: bool = False, log=print, model_tok: tuple | None = None,
              report_only: bool = False, jobs: int = 1, worker: bool = False) -> dict | None:
    """Run every unfinished cell, then write bench.json, bench.md and tradeoff.png.

    `model_tok` gives an already loaded (model, tokenizer) instead of `run.model` (tests).
    `report_only` runs nothing: it tabulates the finished cells of the selected methods.
    `jobs` > 1 runs that many cells at once in worker processes (`aglora.bench_workers`);
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
    total_start = time.time()
    from aglora.models import load_model
    model, tok = model_tok if model_tok is not None else load_model(run.model)
    probes = bench_probes(concept, run)
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
               claim: bool, log=print) -> None:
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


def _cached_seconds(path: Path) -> float:
    return float(read_json(path).get("seconds", float("nan"))) if path.is_file() else float("nan")


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
