"""Probes -> metrics, base model against the model with its adapter.

Every metric is computed twice on the same probes: with the adapter disabled (base) and enabled
(after). Likelihood-choice accuracy counts only probes the base model gets right ("known"), with
chance level and a bootstrap 95 % interval. Leak rate counts generations (greedy + seeded samples)
that match a leak pattern. Fluency (distinct-2, repetition) and KL(base || model) are measured on
neighbour and utility prompts, and a collapse verdict flags a broken model whatever the forget
numbers say. See docs/metrics.md for the schema of the returned dictionary.
"""

from __future__ import annotations

import time

from torch import nn

from aglora.concepts import Probe
from aglora.config import EvalConfig
from aglora.model.adapter import adapter_disabled, merged_copy
from aglora.model.likelihood import continuation_nll
from aglora.pipeline.eval.metrics import side_labels, summarise
from aglora.pipeline.eval.sides import (
    SideResult,
    _device,
    base_cache_file,
    base_side,
    kl_between,
    measure,
)
from aglora.runtime.threads import run_pair


def evaluate(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig,
             default_leak_patterns: list[str] | None = None, name: str = "",
             refusals: list[str] | None = None) -> tuple[dict, list[dict]]:
    """Metrics (base -> after) and per-probe records for the report. `name` (the concept's)
    and `refusals` (phrases counted as refusals besides the built-in patterns) serve the
    classification of the answers (`aglora.pipeline.eval.answers`)."""
    if not probes:
        from aglora.errors import AgloraError
        raise AgloraError("no probes to evaluate; give a probe file with --probes")
    default_leak_patterns = default_leak_patterns or []
    start = time.time()
    # Generate where it tells something (eval.generate_splits): forget probes (leaks, what is
    # said instead), neighbour probes (fluency, over-refusal), utility probes (over-refusal).
    gen_mask = [p.split in cfg.generate_splits for p in probes]
    has_adapter = hasattr(model, "disable_adapter")
    cache_path = base_cache_file(model, probes, cfg, gen_mask)
    after_model = merged_copy(model)  # the adapter folded in: no LoRA overhead per forward
    # Two independent passes run at once on a CPU (aglora.runtime.threads), each on half the
    # threads:
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

    def kl(keep) -> float:  # 0 without an adapter: the model is its own base
        if not has_adapter:
            return 0.0
        return kl_between(after_model, model, tok, [p for p in probes if keep(p)],
                          cfg.batch_size, cfg.parallel_sides)

    metrics = summarise(probes, base, after, default_leak_patterns, {
        "kl_neighbor": kl(lambda p: p.split == "neighbor"),
        "kl_utility": kl(lambda p: p.split == "utility" and p.family == "general")},
        name, refusals)
    nll = answer_nll(model, tok, probes, base, after, cfg.batch_size)
    if nll is not None:
        metrics["answers"]["splits"]["forget"]["base_nll"] = nll
    metrics["eval_seconds"] = time.time() - start
    labels = [side_labels(probes, s, default_leak_patterns, name, refusals)
              for s in (base, after)]
    records = []
    for i, p in enumerate(probes):
        records.append({**p.to_dict(), "base_scores": base.scores[i],
                        "after_scores": after.scores[i],
                        "base_generations": base.generations[i],
                        "after_generations": after.generations[i],
                        "base_labels": labels[0][i], "after_labels": labels[1][i]})
    return metrics, records


def answer_nll(model: nn.Module, tok, probes: list[Probe], base: SideResult, after: SideResult,
               batch_size: int) -> dict | None:
    """Mean per-token NLL, under the base model, of the greedy forget answers before and after:
    how plausible as language the base model finds what is said in the concept's place.
    None without forget generations."""
    idx = [i for i, p in enumerate(probes) if p.split == "forget" and base.generations[i]]
    if not idx:
        return None
    picked = [probes[i] for i in idx]
    with adapter_disabled(model):  # the base model judges both sides' answers
        values = {k: continuation_nll(model, tok, picked, [side.generations[i][0] for i in idx],
                                      batch_size)
                  for k, side in (("base", base), ("after", after))}
    return {k: _nan_mean(v) for k, v in values.items()}


def _nan_mean(xs: list[float]) -> float:
    kept = [x for x in xs if x == x]
    return sum(kept) / len(kept) if kept else float("nan")
