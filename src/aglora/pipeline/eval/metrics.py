"""Metrics of an evaluation from its base and after sides (schema: docs/metrics.md).

Likelihood-choice accuracy counts only probes the base model gets right ("known"), with chance
level and a bootstrap 95 % interval; margins and TOFU's truth ratio on the same probes. Leak
rate counts generations (greedy + seeded samples) that match a leak pattern. Fluency (distinct-2,
repetition) is measured on neighbour generations, and a collapse verdict flags a broken model
whatever the forget numbers say. `summarise` assembles all of it; the evaluation stage and the
bench both call it.
"""

from __future__ import annotations

import random
from collections import defaultdict

from aglora.concepts import Probe
from aglora.model.likelihood import choice_correct, margin, truth_ratio
from aglora.pipeline.eval.sides import SideResult
from aglora.pipeline.eval.text_stats import distinct_n, leaks, repetition

COLLAPSE_DISTINCT_RATIO = 0.6   # distinct-2 after below this share of base -> degenerate


COLLAPSE_NEIGHBOR_ACC = 0.5     # neighbour known accuracy below this -> degenerate


COLLAPSE_REPETITION_RISE = 0.25  # repetition rising by more than this -> degenerate


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


def fluency(gens: list[list[str]]) -> tuple[float, float]:
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


def summarise(probes: list[Probe], base: SideResult, after: SideResult,
              leak_patterns: list[str], kl: dict[str, float] | None = None) -> dict:
    """The metrics of an evaluation from its two sides: per split and per `split/family` group,
    fluency of the neighbour generations, the `kl` values given (e.g. `kl_neighbor`), and the
    collapse verdict. `leak_patterns` apply to probes that carry none of their own."""
    by_split, by_family = group_indices(probes)
    nb = by_split.get("neighbor", [])
    d_base, r_base = fluency([base.generations[i] for i in nb])
    d_after, r_after = fluency([after.generations[i] for i in nb])
    metrics = {
        "splits": {s: group_metrics(ix, probes, base, after, leak_patterns)
                   for s, ix in sorted(by_split.items())},
        "families": {k: group_metrics(ix, probes, base, after, leak_patterns)
                     for k, ix in sorted(by_family.items())},
        "distinct2": {"base": d_base, "after": d_after},
        "repetition": {"base": r_base, "after": r_after},
        **(kl or {}),
    }
    metrics["verdict"] = collapse_verdict(metrics)
    return metrics
