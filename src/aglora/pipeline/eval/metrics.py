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

from aglora.concepts import Probe, default_refusals
from aglora.model.likelihood import choice_correct, margin, truth_ratio
from aglora.pipeline.eval.answers import classify, label_shares, target_words
from aglora.pipeline.eval.sides import SideResult
from aglora.pipeline.eval.text_stats import distinct_n, leaks, repetition

COLLAPSE_DISTINCT_RATIO = 0.6   # distinct-2 after below this share of base -> degenerate


COLLAPSE_NEIGHBOR_ACC = 0.5     # neighbour known accuracy below this -> degenerate


COLLAPSE_REPETITION_RISE = 0.25  # repetition rising by more than this -> degenerate
FORGOTTEN_ACC_MARGIN = 0.10  # forget known accuracy after <= chance + this
FORGOTTEN_LEAK_MAX = 0.10    # forget leak rate after <= this
MIN_FAMILY_KNOWN = 5         # a forget family with fewer known probes does not judge alone
KEPT_NEIGHBOR_ACC = 0.90     # neighbour known accuracy after >= this
KEPT_UTILITY_ACC = 0.95      # utility known accuracy after >= this


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


def _forgotten(g: dict) -> bool:
    """A group's forgetting holds: known accuracy after within chance + the margin, and (where
    generations were judged) the leak rate at most the line. An unmeasurable accuracy fails."""
    acc, chance = g["known_accuracy"]["after"], g["chance"]
    leak = g["leak_rate"]["after"]
    ok_acc = acc == acc and acc <= chance + FORGOTTEN_ACC_MARGIN
    ok_leak = leak != leak or leak <= FORGOTTEN_LEAK_MAX  # no generations judged: no leak line
    return ok_acc and ok_leak


def forgetting_verdict(metrics: dict) -> dict:
    """"forgotten" when the forget split and every forget family with at least
    `MIN_FAMILY_KNOWN` known probes hold (`_forgotten`); "partly forgotten" when some hold and
    others do not, naming those that fail; "not forgotten" when none holds."""
    split = (metrics.get("splits") or {}).get("forget")
    fams = {k.split("/", 1)[1]: g for k, g in (metrics.get("families") or {}).items()
            if k.startswith("forget/") and g.get("n_known", 0) >= MIN_FAMILY_KNOWN}
    if not split or not split.get("n_known"):
        return {"label": "not measured", "failing": {}, "families_judged": sorted(fams)}
    failing = {name: g["known_accuracy"]["after"] for name, g in sorted(fams.items())
               if not _forgotten(g)}
    split_ok = _forgotten(split)
    if split_ok and not failing:
        label = "forgotten"
    elif split_ok or len(failing) < len(fams):
        label = "partly forgotten"
    else:
        label = "not forgotten"
    return {"label": label, "failing": failing, "split_holds": split_ok,
            "families_judged": sorted(fams)}


def kept_verdict(metrics: dict) -> dict:
    """"kept" when neighbour and utility known accuracy after are at or above their lines,
    else "neighbours damaged" / "utility damaged" with the values."""
    damaged = {}
    for split, line in (("neighbor", KEPT_NEIGHBOR_ACC), ("utility", KEPT_UTILITY_ACC)):
        g = (metrics.get("splits") or {}).get(split)
        acc = g["known_accuracy"]["after"] if g and g.get("n_known") else float("nan")
        if acc == acc and acc < line:
            damaged[split] = acc
    return {"label": "kept" if not damaged else "; ".join(
        f"{'neighbours' if s == 'neighbor' else s} damaged ({v:.2f})" for s, v in damaged.items()),
        "damaged": damaged}


def verdict_line(metrics: dict) -> str:
    """One line: degenerate, or the forgetting verdict (with the failing families) and what was
    kept; e.g. "partly forgotten: adversarial 0.54, completion 0.40; neighbours damaged (0.83)"."""
    v = metrics.get("verdict") or {}
    if v.get("degenerate"):
        return "degenerate: " + "; ".join(v.get("reasons") or [])
    f = v.get("forgetting") or forgetting_verdict(metrics)
    k = v.get("kept") or kept_verdict(metrics)
    text = f["label"]
    if f["failing"]:
        text += ": " + ", ".join(f"{name} {acc:.2f}" for name, acc in f["failing"].items())
    elif f["label"] != "forgotten" and not f.get("split_holds", True):
        text += " (the forget split as a whole)"
    return f"{text}; {k['label']}"


def side_labels(probes: list[Probe], side: SideResult, default_patterns: list[str],
                name: str = "", refusals: list[str] | None = None) -> list[list[str]]:
    """The label of every generation (`answers.classify`): forget probes with their leak
    patterns and the name's near misses; other probes only as refusal / looping / other (a
    neighbour naming its own answer is no leak)."""
    phrases = refusals if refusals is not None else default_refusals()
    out = []
    for p, gens in zip(probes, side.generations, strict=True):
        pats = (p.leak_patterns or default_patterns) if p.split == "forget" else []
        targets = (target_words(name, [*pats, *default_patterns]) if p.split == "forget"
                   else [])
        out.append([classify(g, pats, targets, phrases, default_patterns) for g in gens])
    return out


def _answers_group(idx: list[int], side: SideResult, labels: list[list[str]]) -> dict:
    flat = [lab for i in idx for lab in labels[i]]
    texts = [g for i in idx for g in side.generations[i]]
    return {"n_generations": len(flat), "shares": label_shares(flat),
            "distinct2": distinct_n(texts, 2), "repetition": repetition(texts, 3)}


def answers_metrics(probes: list[Probe], base: SideResult, after: SideResult,
                    default_patterns: list[str], name: str = "",
                    refusals: list[str] | None = None) -> dict:
    """What the generations are (leak / mangled / refusal / looping / other shares), with their
    distinct-2 and repetition, base and after: per split that has generations, and per forget
    family (the shares by family the report draws)."""
    labels = {"base": side_labels(probes, base, default_patterns, name, refusals),
              "after": side_labels(probes, after, default_patterns, name, refusals)}
    sides = {"base": base, "after": after}
    by_split, by_family = group_indices(probes)
    out: dict = {"splits": {}, "families": {}}
    for key, groups in (("splits", by_split), ("families", by_family)):
        for g, ix in sorted(groups.items()):
            gen = [i for i in ix if base.generations[i]]
            if gen and (key == "splits" or g.startswith("forget/")):
                out[key][g] = {k: _answers_group(gen, sides[k], labels[k]) for k in sides}
    return out


def summarise(probes: list[Probe], base: SideResult, after: SideResult,
              leak_patterns: list[str], kl: dict[str, float] | None = None, name: str = "",
              refusals: list[str] | None = None) -> dict:
    """The metrics of an evaluation from its two sides: per split and per `split/family` group,
    fluency of the neighbour generations, what the generations are (`answers_metrics`, with the
    concept `name` and the `refusals` phrases), the `kl` values given (e.g. `kl_neighbor`), and
    the collapse verdict. `leak_patterns` apply to probes that carry none of their own."""
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
        "answers": answers_metrics(probes, base, after, leak_patterns, name, refusals),
        **(kl or {}),
    }
    metrics["verdict"] = collapse_verdict(metrics)
    metrics["verdict"]["forgetting"] = forgetting_verdict(metrics)
    metrics["verdict"]["kept"] = kept_verdict(metrics)
    return metrics
