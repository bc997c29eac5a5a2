"""The `Recommendation` section of a ban's report (rendered only when metrics.json has one)."""

from __future__ import annotations

from aglora.report import Block, Bullets, Heading, Note, Table

TARGETS = {"exposure_after": 0.02, "ndcg10": 0.90, "validity_ratio": 0.95}


def _pct(x) -> str:
    return "–" if not isinstance(x, (int, float)) or x != x else f"{100 * x:.1f} %"


def _num(x, digits: int = 2) -> str:
    return "–" if not isinstance(x, (int, float)) or x != x else f"{x:.{digits}f}"


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def _interval(ci: list[float] | None) -> str:
    """', 95 % interval a–b ×' for a bootstrap interval, '' when there is none."""
    return f"; 95 % interval {_num(ci[0])}–{_num(ci[1])} ×" if ci else ""


def recommendation_section(metrics: dict) -> list[Block]:
    r = metrics.get("recommendation")
    if not isinstance(r, dict):
        return []
    n = r["n_titles"]
    exp, val = r["exposure"], r["validity"]
    worst = r["worst_median_rank_after"]
    ratio = val["after"] / val["base"] if val["base"] else float("nan")
    others = r.get("validity_others") or {}  # None in runs from before the metric
    others_ratio = (others["after"] / others["base"] if others.get("base") else float("nan"))
    rows = [
        ["banned exposure (share of lists)", f"{_pct(exp['base'])} → {_pct(exp['after'])}",
         f"≤ 2 %: {_ok(exp['after'] <= TARGETS['exposure_after'])}"],
        ["worst banned median rank", f"– → {worst:g} of {n}",
         f"> {n / 2:g}: {_ok(worst > n / 2)}"],
        ["NDCG@10 of the other titles", _num(r["ndcg10"]["mean"]),
         f"≥ 0.90: {_ok(r['ndcg10']['mean'] >= TARGETS['ndcg10'])}"],
        ["catalogue-title validity of the other items (banned titles left out)",
         f"{_pct(others.get('base'))} → {_pct(others.get('after'))}",
         f"≥ 0.95 × base: {_ok(others_ratio >= TARGETS['validity_ratio'])} "
         f"({_num(others_ratio)} ×{_interval(others.get('ratio_ci95'))})"],
        ["catalogue-title validity, all items (a banned title counts as valid at base)",
         f"{_pct(val['base'])} → {_pct(val['after'])}", f"{_num(ratio)} × base"],
        ["catalogue-title validity, each item once per list",
         f"{_pct(r.get('validity_distinct', {}).get('base'))} → "
         f"{_pct(r.get('validity_distinct', {}).get('after'))}", ""],
        ["genre agreement", f"{_pct(r['genre_agreement']['base'])} → "
                            f"{_pct(r['genre_agreement']['after'])}", ""],
    ]
    blocks: list[Block] = [
        Heading("Recommendation"),
        Note(f"{r['n_lists']} generated lists (greedy + samples) over {r['n_prompts']} "
             f"held-apart prompts ({r['n_prompts_naming_banned']} prompts that name a banned "
             f"title left out of exposure and rank); the catalogue ({n} titles) ranked by "
             f"likelihood on {r['n_rank_prompts']} of them."),
        Table(["measure", "base → after", "target"], rows),
        Table(["banned title", "exposure base → after", "median rank base → after"],
              [[t, f"{_pct(v['exposure']['base'])} → {_pct(v['exposure']['after'])}",
                f"{v['median_rank']['base']:g} → {v['median_rank']['after']:g}"]
               for t, v in r["banned_titles"].items()]),
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
            f"{_pct(inter['this']['exposure_alone'])}, with both "
            f"{_pct(inter['this']['exposure_both'])}",
            f"Other ban ({', '.join(inter['other_banned'])}, {inter['other_run']}): exposure "
            f"alone {_pct(inter['other']['exposure_alone'])}, with both "
            f"{_pct(inter['other']['exposure_both'])}",
            f"Validity: this alone {_pct(inter['validity']['this_alone'])}, other alone "
            f"{_pct(inter['validity']['other_alone'])}, both {_pct(inter['validity']['both'])}",
            f"Verdict: {verdict} (tolerance {_pct(inter['tolerance'])} of exposure)"]))
    examples = r.get("examples") or []
    if examples:
        blocks.append(Table(["prompt", "base (greedy)", "after (greedy)"],
                            [[e["prompt"], e["base"][:200], e["after"][:200]]
                             for e in examples[:4]]))
    return blocks


def _pairs(a: list, b: list) -> list[tuple]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else None, b[i] if i < len(b) else None) for i in range(n)]
