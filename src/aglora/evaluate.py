"""Probes -> metrics, base model against the model with its adapter (DESIGN.md section 3).

Every metric is computed twice on the same probes: with the adapter disabled (base) and enabled
(after). Likelihood-choice accuracy counts only probes the base model gets right ("known"), with
chance level and a bootstrap 95 % interval. Leak rate counts generations (greedy + seeded samples)
that match a leak pattern. Fluency (distinct-2, repetition) and KL(base || model) are measured on
neighbour and utility prompts, and a collapse verdict flags a broken model whatever the forget
numbers say. See docs/metrics.md for the schema of the returned dictionary.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import EvalConfig
from aglora.forward import logits_at
from aglora.generation import distinct_n, generate, leaks, repetition
from aglora.io import read_json, write_json
from aglora.likelihood import choice_correct, margin, score_options_with_lengths, truth_ratio
from aglora.lora import adapter_disabled, merged_copy
from aglora.models import cache_dir, weights_digest
from aglora.objectives import kl_base_model
from aglora.parallel import run_pair
from aglora.text import encode

COLLAPSE_DISTINCT_RATIO = 0.6   # distinct-2 after below this share of base -> degenerate
COLLAPSE_NEIGHBOR_ACC = 0.5     # neighbour known accuracy below this -> degenerate
COLLAPSE_REPETITION_RISE = 0.25  # repetition rising by more than this -> degenerate


@dataclass
class SideResult:
    """Raw measurements of one model state (base or after) on all probes."""

    scores: list[list[float]] = field(default_factory=list)
    lengths: list[list[int]] = field(default_factory=list)
    generations: list[list[str]] = field(default_factory=list)


def measure(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig, gen_mask: list[bool],
            label: str, parallel: bool = False) -> SideResult:
    """Likelihood scores of every probe with options, generations where `gen_mask` says.

    `parallel`: scoring and generation run at once (`aglora.parallel`), each on half the threads.
    """
    def likelihood() -> tuple[list[list[float]], list[list[int]]]:
        return score_options_with_lengths(model, tok, probes, cfg.batch_size,
                                          progress=f"likelihood ({label})")

    def generations() -> list[list[str]]:
        out: list[list[str]] = [[] for _ in probes]
        for sampled in (True, False):
            idx = [i for i, g in enumerate(gen_mask)
                   if g and (probes[i].split in cfg.sample_splits) == sampled]
            if not idx:
                continue
            gens = generate(model, tok, [probes[i] for i in idx],
                            cfg.n_samples if sampled else 0, cfg.temperature, cfg.max_new_tokens,
                            cfg.seed, cfg.generate_batch_size or cfg.batch_size,
                            desc=f"generate ({label}{'' if sampled else ', greedy'})")
            for i, g in zip(idx, gens, strict=True):
                out[i] = g
        return out

    (scores, lengths), gens = run_pair(likelihood, generations, _device(model), parallel)
    return SideResult(scores, lengths, gens)


@torch.no_grad()
def kl_between(model: nn.Module, base: nn.Module, tok, probes: list[Probe],
               batch_size: int, parallel: bool = True) -> float:
    """Mean KL(base || model) per content token over the probes' context+answer sequences.

    `base` may be the peft model `model` came from: its adapter is disabled for its pass.
    `parallel`: run the two passes of a batch at once where that gains (`aglora.parallel`).
    """
    if not probes:
        return float("nan")
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for s in range(0, len(probes), batch_size):
        chunk = probes[s: s + batch_size]
        b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)

        def base_pass(b=b) -> torch.Tensor:  # [n, vocab]
            with adapter_disabled(base):
                return logits_at(base, b, b.content_mask)

        # Two passes at once on a CPU, unless both are the same module (one adapter switch).
        base_logits, logits = run_pair(base_pass, lambda b=b: logits_at(model, b, b.content_mask),
                                       device, enabled=parallel and model is not base)
        n = float(b.content_mask.sum())
        total += float(kl_base_model(logits, base_logits)) * n
        count += n
    return total / max(count, 1.0)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def base_side(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig,
              gen_mask: list[bool], cache_path: Path | None = None,
              parallel: bool = False) -> SideResult:
    """The base model's measurements (adapter disabled), from the cache when it has them.

    The base side depends only on the base weights, the probes and the eval settings, so it is
    kept under `<cache>/base-eval/<key>.json` (key: a digest of all three plus the library
    versions) and a rerun measures only the after side. `eval.cache_base: false` turns it off.
    `cache_path`: that file, when the caller has already worked it out (`base_cache_file`);
    `parallel`: as in `measure`.
    """
    path = cache_path or base_cache_file(model, probes, cfg, gen_mask)
    if path is not None and path.is_file():
        data = read_json(path)
        return SideResult(data["scores"], data["lengths"], data["generations"])
    with adapter_disabled(model):
        side = measure(model, tok, probes, cfg, gen_mask, "base", parallel)
    if path is not None:
        write_json(path, {"scores": side.scores, "lengths": side.lengths,
                          "generations": side.generations})
    return side


def base_cache_file(model: nn.Module, probes: list[Probe], cfg: EvalConfig,
                    gen_mask: list[bool]) -> Path | None:
    """Where the base side of this evaluation is cached (None: `eval.cache_base` is off)."""
    return _base_cache_path(model, probes, cfg, gen_mask) if cfg.cache_base else None


def _base_cache_path(model: nn.Module, probes: list[Probe], cfg: EvalConfig,
                     gen_mask: list[bool]) -> Path:
    import transformers

    import aglora
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("relearn_steps", "cache_base")}
    blob = json.dumps({"weights": weights_digest(model), "eval": settings, "gen": gen_mask,
                       "probes": [p.to_dict() for p in probes], "aglora": aglora.__version__,
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "device": str(next(model.parameters()).device)}, sort_keys=True)
    return cache_dir() / "base-eval" / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0) -> list[float]:
    if not values:
        return [float("nan"), float("nan")]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n_boot))
    return [means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _median(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def group_metrics(idx: list[int], probes: list[Probe], base: SideResult, after: SideResult,
                  default_patterns: list[str]) -> dict:
    """Metrics of one group of probes (a split or a split/family)."""
    choice = [i for i in idx if probes[i].has_choice]
    known = [i for i in choice if choice_correct(base.scores[i])]
    after_known = [float(choice_correct(after.scores[i])) for i in known]
    gen_idx = [i for i in idx if base.generations[i]]
    pat = {i: probes[i].leak_patterns or default_patterns for i in gen_idx}
    leak_idx = [i for i in gen_idx if pat[i]]

    def leak_rate(side: SideResult) -> float:
        flags = [leaks(g, pat[i]) for i in leak_idx for g in side.generations[i]]
        return _mean([float(f) for f in flags])

    out = {
        "n": len(idx), "n_choice": len(choice), "n_known": len(known),
        "skipped_no_choice": len(idx) - len(choice),
        "chance": _mean([1 / (1 + len(probes[i].distractors)) for i in choice]),
        "known_accuracy": {"base": 1.0 if known else float("nan"), "after": _mean(after_known),
                           "after_ci95": bootstrap_ci(after_known)},
        "accuracy_all": {"base": _mean([float(choice_correct(base.scores[i])) for i in choice]),
                         "after": _mean([float(choice_correct(after.scores[i])) for i in choice])},
        "margin": {"base": _mean([margin(base.scores[i]) for i in known]),
                   "after": _mean([margin(after.scores[i]) for i in known])},
        "answer_logprob_drop": _mean([base.scores[i][0] - after.scores[i][0] for i in known]),
        # Median: the ratio is heavy-tailed once answers become very unlikely.
        "truth_ratio": {"base": _median([truth_ratio(base.scores[i], base.lengths[i])
                                         for i in known]),
                        "after": _median([truth_ratio(after.scores[i], after.lengths[i])
                                          for i in known])},
        "leak_rate": {"base": leak_rate(base), "after": leak_rate(after),
                      "n_generations": sum(len(base.generations[i]) for i in leak_idx)},
        "skipped_no_leak_patterns": len(gen_idx) - len(leak_idx),
    }
    return out


def _fluency(gens: list[list[str]]) -> tuple[float, float]:
    flat = [g for gs in gens for g in gs]
    return distinct_n(flat, 2), repetition(flat, 3)


def collapse_verdict(metrics: dict) -> dict:
    reasons = []
    d = metrics["distinct2"]
    if d["base"] > 0 and d["after"] < COLLAPSE_DISTINCT_RATIO * d["base"]:
        reasons.append(f"neighbour distinct-2 fell from {d['base']:.2f} to {d['after']:.2f}")
    r = metrics["repetition"]
    if r["after"] - r["base"] > COLLAPSE_REPETITION_RISE:
        reasons.append(f"neighbour repetition rose from {r['base']:.2f} to {r['after']:.2f}")
    nb = metrics["splits"].get("neighbor", {})
    acc = nb.get("known_accuracy", {}).get("after", float("nan"))
    if acc == acc and acc < COLLAPSE_NEIGHBOR_ACC:
        reasons.append(f"neighbour known accuracy fell to {acc:.2f}")
    return {"degenerate": bool(reasons), "reasons": reasons,
            "thresholds": {"distinct2_ratio": COLLAPSE_DISTINCT_RATIO,
                           "neighbor_accuracy": COLLAPSE_NEIGHBOR_ACC,
                           "repetition_rise": COLLAPSE_REPETITION_RISE}}


def group_indices(probes: list[Probe]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Probe indices per split and per `split/family` key."""
    by_split: dict[str, list[int]] = defaultdict(list)
    by_family: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(probes):
        by_split[p.split].append(i)
        by_family[p.key].append(i)
    return by_split, by_family


def evaluate(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig,
             default_leak_patterns: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Metrics (base -> after) and per-probe records for the report."""
    if not probes:
        from aglora.errors import AgloraError
        raise AgloraError("no probes to evaluate; give a probe file with --probes")
    default_leak_patterns = default_leak_patterns or []
    start = time.time()
    # Generate where it tells something: forget probes (leaks) and neighbour probes (fluency).
    gen_mask = [p.split in ("forget", "neighbor") for p in probes]
    has_adapter = hasattr(model, "disable_adapter")
    cache_path = base_cache_file(model, probes, cfg, gen_mask)
    after_model = merged_copy(model)  # the adapter folded in: no LoRA overhead per forward
    # Two independent passes run at once on a CPU (aglora.parallel), each on half the threads:
    # the base and after sides on a first evaluation; scoring and generation otherwise. Every
    # pass thus runs on the same number of threads, cached base side or not: the same numbers.
    parallel = cfg.parallel_sides
    cached = cache_path is not None and cache_path.is_file()
    if not has_adapter:
        base = after = base_side(model, tok, probes, cfg, gen_mask, cache_path, parallel)
    elif cached:
        base = base_side(model, tok, probes, cfg, gen_mask, cache_path)
        after = measure(after_model, tok, probes, cfg, gen_mask, "after", parallel)
    else:
        base, after = run_pair(
            lambda: base_side(model, tok, probes, cfg, gen_mask, cache_path),
            lambda: measure(after_model, tok, probes, cfg, gen_mask, "after"),
            _device(model), enabled=parallel)
    by_split, by_family = group_indices(probes)
    nb = by_split.get("neighbor", [])

    def kl(idx: list[int]) -> float:  # 0 without an adapter: the model is its own base
        if not has_adapter:
            return 0.0
        return kl_between(after_model, model, tok, [probes[i] for i in idx], cfg.batch_size,
                          cfg.parallel_sides)

    d_base, r_base = _fluency([base.generations[i] for i in nb])
    d_after, r_after = _fluency([after.generations[i] for i in nb])
    metrics = {
        "splits": {s: group_metrics(ix, probes, base, after, default_leak_patterns)
                   for s, ix in sorted(by_split.items())},
        "families": {k: group_metrics(ix, probes, base, after, default_leak_patterns)
                     for k, ix in sorted(by_family.items())},
        "distinct2": {"base": d_base, "after": d_after},
        "repetition": {"base": r_base, "after": r_after},
        "kl_neighbor": kl(nb),
        "kl_utility": kl([i for i in by_split.get("utility", [])
                          if probes[i].family == "general"]),
    }
    metrics["verdict"] = collapse_verdict(metrics)
    metrics["eval_seconds"] = time.time() - start
    records = []
    for i, p in enumerate(probes):
        records.append({**p.to_dict(), "base_scores": base.scores[i],
                        "after_scores": after.scores[i],
                        "base_generations": base.generations[i],
                        "after_generations": after.generations[i]})
    return metrics, records
