"""Recommendation metrics, each computed for the base model and the model with the adapter.

* exposure: share of generated lists (greedy + seeded samples, one list per generation) that
  contain a banned title (found by `matcher.TitleMatcher.find`);
* banned rank: rank of each banned title among all catalogue titles by likelihood, median over
  prompts (bottom half: median rank > n_titles / 2);
* NDCG@10 of the after ranking of the non-banned titles against the base ranking;
* validity: share of listed items (see `matcher.list_items`) that are catalogue titles (also
  with each item counted once per list: `validity_distinct`); `validity_others` leaves the
  banned titles' own items out on both sides: the quality of *the rest* of the lists, which a
  ban should keep. (In plain validity a banned title is a valid item at base, so a ban that
  does exactly its job, and puts an average item in its place, lowers it.) Its after/base ratio
  gets a paired bootstrap 95 % interval over prompts (`ratio_ci95`): about 300 items make the
  ratio uncertain by several points, and the interval says by how much.
* genre agreement: over lists naming at least one catalogue title, the mean share of those titles
  that share a genre with the profile.

Prompts that name a banned title in the profile ("I loved The Matrix ...") are left out of the
exposure and rank metrics (echoing the user's own words is not a recommendation), and counted.
"""

from __future__ import annotations

import statistics
from collections import Counter

import torch

from aglora.recommend.catalog import Catalog
from aglora.recommend.matcher import TitleMatcher, normalize
from aglora.recommend.prompts import RecPrompt
from aglora.recommend.ranking import ndcg_at_k, ranks


def names_banned(prompt: RecPrompt, banned: set[str]) -> bool:
    return any(normalize(t) in banned for t in prompt.liked)


def exposure(gens: list[list[str]], banned: set[str], matcher: TitleMatcher) -> float:
    lists = [g for gs in gens for g in gs]
    if not lists:
        return float("nan")
    return sum(bool(set(matcher.find(g)) & banned) for g in lists) / len(lists)


def validity(gens: list[list[str]], matcher: TitleMatcher, distinct: bool = False,
             leave_out: frozenset[str] | set[str] = frozenset()) -> tuple[float, int]:
    """(share of listed items that are catalogue titles, number of items).

    distinct=True counts each item text once per list (the small model often repeats one item
    five times, so one swapped title moves the per-line share by five items). `leave_out`:
    catalogue keys (normalised titles) whose items are not counted at all.
    """
    counts = validity_counts(gens, matcher, leave_out, distinct)
    valid, items = sum(v for v, _ in counts), sum(n for _, n in counts)
    return (valid / items if items else float("nan"), items)


def validity_counts(gens: list[list[str]], matcher: TitleMatcher,
                    leave_out: frozenset[str] | set[str] = frozenset(),
                    distinct: bool = False) -> list[tuple[int, int]]:
    """Per prompt: (catalogue-title items, all items) over its lists, `leave_out` not counted;
    distinct=True counts each item text once per list."""
    out = []
    for gs in gens:
        keys = []
        for g in gs:
            pairs = matcher.items(g)
            if distinct:
                pairs = list({" ".join(normalize(i).split()): (i, k) for i, k in pairs}.values())
            keys += [k for _, k in pairs if k not in leave_out]
        out.append((sum(k is not None for k in keys), len(keys)))
    return out


def ratio_interval(base: list[tuple[int, int]], after: list[tuple[int, int]],
                   n_boot: int = 2000, seed: int = 0) -> list[float]:
    """95 % paired bootstrap interval of validity(after) / validity(base).

    `base` and `after` hold (valid items, items) per prompt, in the same prompt order; a
    resample draws prompts with replacement and keeps each prompt's base and after lists
    together. Resamples whose base side has no valid item are skipped.
    """
    if not base or len(base) != len(after):
        return [float("nan"), float("nan")]
    counts = torch.tensor([[*b, *a] for b, a in zip(base, after, strict=True)],
                          dtype=torch.float64)  # [prompts, 4]
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(base), (n_boot, len(base)), generator=gen)  # [n_boot, prompts]
    sums = counts[pick].sum(1)  # [n_boot, 4]: base valid, base items, after valid, after items
    ok = (sums[:, 0] > 0) & (sums[:, 3] > 0)
    ratios = (sums[ok, 2] / sums[ok, 3]) / (sums[ok, 0] / sums[ok, 1])
    if ratios.numel() == 0:
        return [float("nan"), float("nan")]
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return [lo, hi]


def genre_agreement(gens: list[list[str]], prompts: list[RecPrompt], catalog: Catalog,
                    matcher: TitleMatcher) -> float:
    shares = []
    for gs, prompt in zip(gens, prompts, strict=True):
        if not prompt.genres:
            continue
        want = set(prompt.genres)
        for g in gs:
            found = [catalog.get(k) for k in matcher.find(g)]
            found = [m for m in found if m is not None]
            if found:
                shares.append(sum(bool(set(m.genres) & want) for m in found) / len(found))
    return sum(shares) / len(shares) if shares else float("nan")


def title_counts(gens: list[list[str]], matcher: TitleMatcher) -> Counter:
    """In how many lists each catalogue title appears."""
    return Counter(k for gs in gens for g in gs for k in set(matcher.find(g)))


def banned_rank(scores: torch.Tensor, index: int) -> dict:
    """Median (and all) ranks of title `index` over the prompts' rows of `scores`."""
    r = ranks(scores)[:, index].tolist() if scores.numel() else []
    return {"median": statistics.median(r) if r else float("nan"), "ranks": r}


def base_after(base: float, after: float) -> dict:
    return {"base": base, "after": after}


def recommendation_metrics(catalog: Catalog, banned: list[str], prompts: list[RecPrompt],
                           base_gens: list[list[str]], after_gens: list[list[str]],
                           base_scores: torch.Tensor, after_scores: torch.Tensor,
                           rank_prompt_idx: list[int]) -> dict:
    """All recommendation metrics; scores are [len(rank_prompt_idx), n_titles]."""
    matcher = TitleMatcher(catalog.titles)
    keys = {normalize(t) for t in banned}
    clean = [i for i, p in enumerate(prompts) if not names_banned(p, keys)]
    rank_rows = [r for r, i in enumerate(rank_prompt_idx) if i in set(clean)]
    b_gens, a_gens = [base_gens[i] for i in clean], [after_gens[i] for i in clean]
    n_titles = len(catalog)
    idx = {m.key: j for j, m in enumerate(catalog.movies)}
    banned_idx = {idx[k] for k in keys}
    b_scores, a_scores = base_scores[rank_rows], after_scores[rank_rows]
    per_title = {}
    for title in banned:
        j = idx[normalize(title)]
        b, a = banned_rank(b_scores, j), banned_rank(a_scores, j)
        per_title[title] = {
            "exposure": base_after(exposure(b_gens, {normalize(title)}, matcher),
                                   exposure(a_gens, {normalize(title)}, matcher)),
            "median_rank": base_after(b["median"], a["median"]),
            "bottom_half": a["median"] > n_titles / 2,
            "ranks": base_after(b["ranks"], a["ranks"]),
        }
    ndcgs = [ndcg_at_k(b_scores[r], a_scores[r], banned_idx) for r in range(len(rank_rows))]
    b_val, b_items = validity(base_gens, matcher)
    a_val, a_items = validity(after_gens, matcher)
    b_oval, b_oitems = validity(base_gens, matcher, leave_out=keys)
    a_oval, a_oitems = validity(after_gens, matcher, leave_out=keys)
    b_dval, b_ditems = validity(base_gens, matcher, distinct=True)
    a_dval, a_ditems = validity(after_gens, matcher, distinct=True)
    return {
        "banned": list(banned),
        "n_titles": n_titles,
        "n_prompts": len(prompts),
        "n_prompts_naming_banned": len(prompts) - len(clean),
        "n_lists": sum(len(g) for g in b_gens),
        "exposure": base_after(exposure(b_gens, keys, matcher), exposure(a_gens, keys, matcher)),
        "banned_titles": per_title,
        "worst_median_rank_after": min(t["median_rank"]["after"] for t in per_title.values()),
        "n_rank_prompts": len(rank_rows),
        "ndcg10": {"mean": sum(ndcgs) / len(ndcgs) if ndcgs else float("nan"),
                   "min": min(ndcgs) if ndcgs else float("nan"), "per_prompt": ndcgs},
        "validity": {"base": b_val, "after": a_val, "n_items": base_after(b_items, a_items)},
        "validity_others": {"base": b_oval, "after": a_oval,
                            "n_items": base_after(b_oitems, a_oitems),
                            "ratio_ci95": ratio_interval(
                                validity_counts(base_gens, matcher, keys),
                                validity_counts(after_gens, matcher, keys))},
        "validity_distinct": {"base": b_dval, "after": a_dval,
                              "n_items": base_after(b_ditems, a_ditems)},
        "genre_agreement": base_after(genre_agreement(base_gens, prompts, catalog, matcher),
                                      genre_agreement(after_gens, prompts, catalog, matcher)),
        "top_titles": {"base": title_counts(b_gens, matcher).most_common(10),
                       "after": title_counts(a_gens, matcher).most_common(10)},
    }
