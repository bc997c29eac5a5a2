"""The `Recommendation` section of a ban's report (rendered only when metrics.json has one).

The list quality of the whole ban (NDCG@10 of the rest, validity of the other items) in one
table, then each banned title on its own line with its two lines (exposure, median rank) judged
separately: in a ban of twenty titles the one that holds on is what a reader looks for, so the
section says how many titles meet both and names the worst on each.
"""

from __future__ import annotations

from aglora.pipeline.report.document import Block, Bullets, Heading, Note, Table
from aglora.runtime.format import fmt, fmt_pct

TARGETS = {"exposure_after": 0.02, "ndcg10": 0.90, "validity_ratio": 0.95}


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def _interval(ci: list[float] | None) -> str:
    """', 95 % interval a–b ×' for a bootstrap interval, '' when there is none."""
    return f"; 95 % interval {fmt(ci[0])}–{fmt(ci[1])} ×" if ci else ""


def recommendation_section(metrics: dict) -> list[Block]:
    r = metrics.get("recommendation")
    if not isinstance(r, dict):
        return []
    n = r["n_titles"]
    exp, val = r["exposure"], r["validity"]
    worst = r["worst_median_rank_after"]
    top_exposure = max((v["exposure"]["after"] for v in r["banned_titles"].values()),
                       default=float("nan"))
    ratio = val["after"] / val["base"] if val["base"] else float("nan")
    others = r.get("validity_others") or {}  # None in runs from before the metric
    others_ratio = (others["after"] / others["base"] if others.get("base") else float("nan"))
    rows = [
        ["banned exposure (share of lists)", f"{fmt_pct(exp['base'])} → {fmt_pct(exp['after'])}",
         f"≤ 2 %: {_met(exp['after'] <= TARGETS['exposure_after'])}"],
        ["highest exposure of one banned title",
         f"– → {fmt_pct(top_exposure)}",
         f"≤ 2 % each: {_met(top_exposure <= TARGETS['exposure_after'])}"],
        ["worst banned median rank", f"– → {worst:g} of {n}",
         f"> {n / 2:g}: {_met(worst > n / 2)}"],
        ["NDCG@10 of the other titles", fmt(r["ndcg10"]["mean"]),
         f"≥ 0.90: {_met(r['ndcg10']['mean'] >= TARGETS['ndcg10'])}"],
        ["catalogue-title validity of the other items (banned titles left out)",
         f"{fmt_pct(others.get('base'))} → {fmt_pct(others.get('after'))}",
         f"≥ 0.95 × base: {_met(others_ratio >= TARGETS['validity_ratio'])} "
         f"({fmt(others_ratio)} ×{_interval(others.get('ratio_ci95'))})"],
        ["catalogue-title validity, all items (a banned title counts as valid at base)",
         f"{fmt_pct(val['base'])} → {fmt_pct(val['after'])}", f"{fmt(ratio)} × base"],
        ["catalogue-title validity, each item once per list",
         f"{fmt_pct(r.get('validity_distinct', {}).get('base'))} → "
         f"{fmt_pct(r.get('validity_distinct', {}).get('after'))}", ""],
        ["genre agreement", f"{fmt_pct(r['genre_agreement']['base'])} → "
                            f"{fmt_pct(r['genre_agreement']['after'])}", ""],
    ]
    blocks: list[Block] = [
        Heading("Recommendation"),
        Note(f"{r['n_lists']} generated lists (greedy + samples) over {r['n_prompts']} "
             f"held-apart prompts ({r['n_prompts_naming_banned']} prompts that name a banned "
             f"title left out of exposure and rank); the catalogue ({n} titles) ranked by "
             f"likelihood on {r['n_rank_prompts']} of them."),
        Table(["measure", "base → after", "target"], rows),
        *per_title_blocks(r),
    ]
    top = r.get("top_titles", {})
    if top:
        blocks.append(Table(["most listed, base", "most listed, after"],
                            [[f"{b[0]} ({b[1]})" if b else "", f"{a[0]} ({a[1]})" if a else ""]
                             for b, a in _pairs(top.get("base", []), top.get("after", []))]))
    inter = r.get("interference")
    if isinstance(inter, dict):
        verdict = "they INTERFERE" if inter["interferes"] else "no interference"
        blocks.append(Heading("Two bans loaded together", 3))
        blocks.append(Bullets([
            f"This ban ({', '.join(r['banned'])}): exposure alone "
            f"{fmt_pct(inter['this']['exposure_alone'])}, with both "
            f"{fmt_pct(inter['this']['exposure_both'])}",
            f"Other ban ({', '.join(inter['other_banned'])}, {inter['other_run']}): exposure "
            f"alone {fmt_pct(inter['other']['exposure_alone'])}, with both "
            f"{fmt_pct(inter['other']['exposure_both'])}",
            f"Validity: this alone {fmt_pct(inter['validity']['this_alone'])}, other alone "
            f"{fmt_pct(inter['validity']['other_alone'])}, both "
            f"{fmt_pct(inter['validity']['both'])}",
            f"Verdict: {verdict} (tolerance {fmt_pct(inter['tolerance'])} of exposure)"]))
    examples = r.get("examples") or []
    if examples:
        blocks.append(Table(["prompt", "base (greedy)", "after (greedy)"],
                            [[e["prompt"], e["base"][:200], e["after"][:200]]
                             for e in examples[:4]]))
    return blocks


def _title_met(v: dict, n_titles: int) -> tuple[bool, bool]:
    """(exposure after within the line, median rank after in the bottom half) of one title."""
    return (v["exposure"]["after"] <= TARGETS["exposure_after"],
            v["median_rank"]["after"] > n_titles / 2)


def per_title_blocks(r: dict) -> list[Block]:
    """Each banned title: exposure and median rank base → after, each judged on its own line;
    a summary says how many titles meet both and which is worst on each."""
    titles, n = r["banned_titles"], r["n_titles"]
    if not titles:
        return []
    met = {t: _title_met(v, n) for t, v in titles.items()}
    exposed = max(titles, key=lambda t: titles[t]["exposure"]["after"])
    ranked = min(titles, key=lambda t: titles[t]["median_rank"]["after"])
    both = sum(e and k for e, k in met.values())
    summary = (f"{both} of {len(titles)} banned titles meet both lines (exposure after ≤ 2 %, "
               f"median rank after > {n / 2:g} of {n}). Highest exposure after: {exposed} "
               f"({fmt_pct(titles[exposed]['exposure']['after'])}); lowest median rank after: "
               f"{ranked} ({titles[ranked]['median_rank']['after']:g}).")
    rows = [[t, f"{fmt_pct(v['exposure']['base'])} → {fmt_pct(v['exposure']['after'])}",
             _met(met[t][0]), f"{v['median_rank']['base']:g} → {v['median_rank']['after']:g}",
             _met(met[t][1])] for t, v in titles.items()]
    return [Heading("Each banned title", 3), Note(summary),
            Table(["banned title", "exposure base → after", "≤ 2 %",
                   "median rank base → after", f"> {n / 2:g}"], rows)]


def _pairs(a: list, b: list) -> list[tuple]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else None, b[i] if i < len(b) else None) for i in range(n)]
