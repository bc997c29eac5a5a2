"""Build a ban's concept spec (forget / retain items) and its evaluation probe file.

For banned titles B on training prompts P (profile prompts that do not name a banned title):

* forget, family `recommendation`: prompt p + assistant prefix `RANK_PREFIX`, answer `T` for each
  banned T. The base model scores T and a shared pool of other titles (the neighbours of the
  banned films and a seeded random sample) on p; the distractors are the three pool titles
  ranked just below the pool's median (`recommend.forget_distractors=median`, so training stops
  once T has fallen to about the middle of the catalogue; `recommend.forget_distractor_quantile`
  moves that point) or the three ranked just below T
  (`next`); an item carries no choice when those do not all rank below T at base;
* forget, family `description`: fact prompts that describe T (year, director, cast) and are
  answered by its title; distractors kept only where the base model picks T;
* retain, family `list`: prompt p answered by the base model's own greedy list, where that list
  names no banned title (KL(base || model) over the whole list keeps list behaviour and the
  share of real catalogue titles);
* retain, family `list-replaced` (`recommend.replace_in_lists`): the base lists that do name a
  banned title, each banned item line replaced by the best-ranked pool title the list does not
  already hold, so that the slot is filled with a real catalogue title, not an invented one;
* retain, family `recommendation`: the same prompt p answered by the base model's best
  non-banned pool title;
* retain, family `neighbour`: fact prompts about the neighbours of each banned film (same
  director, shared cast, same genre and era), answered by their titles.
* retain, family `protected` (`recommend.protect_top` = N > 0): the N titles the base model
  lists most often on the training prompts (besides the banned ones), one per prompt in turn,
  as the list's first item: the popular titles a ban otherwise drags down with it.

Evaluation probes (written to `probes.jsonl`) use the held-apart prompts and fact templates only:
forget/recommendation, forget/description, and neighbor/same-director|same-cast|same-genre.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

import yaml
from torch import nn

from aglora.concepts import Probe
from aglora.model.likelihood import choice_correct, score_options
from aglora.recommend.catalog import Catalog, Movie
from aglora.recommend.metrics import names_banned
from aglora.recommend.prompts import RecPrompt, distractors_for, fact_probes, neighbours
from aglora.recommend.ranking import RANK_PREFIX, title_scores
from aglora.recommend.settings import RecConfig
from aglora.runtime.artifacts import write_text

log = logging.getLogger("aglora")


MAX_EVAL_RECOMMENDATION_PROBES = 12
ITEM_MARKER = re.compile(r"^\s*(?:\d{1,2}\s*[.):]|[-*\u2022])\s*")  # "3. ", "- " (matcher's)


def title_pattern(title: str) -> str:
    """Case-insensitive regex (used with re.IGNORECASE) that finds a title in text."""
    from aglora.recommend.matcher import normalize
    parts = []
    for t in normalize(title).split():
        parts.append(re.escape(t[:-1]) + "'?s" if t.endswith("s") and len(t) > 2
                     else re.escape(t))
    return r"\b" + r"[\W_]+".join(parts) + r"\b"


def distractor_start(pool_len: int, quantile: float) -> int:
    """Index in the pool's order (best first) of the first of three 'median' distractors:
    int(pool_len * quantile) (pool_len // 2 at 0.5), kept where three titles remain."""
    return max(0, min(int(pool_len * quantile), pool_len - 3))


def _pool(catalog: Catalog, banned: list[Movie], rng: random.Random, size: int) -> list[Movie]:
    keys = {m.key for m in banned}
    pool: list[Movie] = []
    for m in banned:
        pool += [x for x, _ in neighbours(m, catalog, keys, n=6) if x not in pool]
    rest = [x for x in catalog.movies if x.key not in keys and x not in pool]
    pool += rng.sample(rest, max(0, min(len(rest), size - len(pool))))
    return pool


def _keep_known(model: nn.Module, tok, items: list[Probe]) -> list[Probe]:
    """Drop the distractors of items the base model gets wrong (they stay as plain items)."""
    scores = score_options(model, tok, items)
    for item, s in zip(items, scores, strict=True):
        if s and not choice_correct(s):
            item.distractors = []
    return items


def build_ban_spec(model: nn.Module, tok, catalog: Catalog, banned: list[Movie],
                   train_prompts: list[RecPrompt], eval_prompts: list[RecPrompt],
                   cfg: RecConfig, out_dir: Path) -> dict:
    """Write concept.yaml and probes.jsonl into out_dir; return counts."""
    rng = random.Random(f"{cfg.seed}-spec")
    keys = {m.key for m in banned}
    prompts = [p for p in train_prompts if not names_banned(p, keys)]
    pool = _pool(catalog, banned, rng, cfg.pool_size)
    options = [m.title for m in banned] + [m.title for m in pool]
    log.info(f"[aglora] scoring {len(options)} titles on {len(prompts)} training prompts")
    scores = title_scores(model, tok, [p.text for p in prompts], options,
                          desc="ban: score training prompts")  # [n_prompts, n_options]
    nb = len(banned)
    forget: list[Probe] = []
    ranked = [[options[j] for j in sorted(range(nb, len(options)), key=lambda j: -float(row[j]))]
              for row in scores]  # per prompt: non-banned pool titles, best first
    retain, listed = base_list_items(model, tok, catalog, prompts, keys, cfg, ranked)
    retain += protected_items(prompts, protected_titles(listed, catalog, keys, cfg.protect_top))
    for r, p in enumerate(prompts):
        row = scores[r].tolist()
        pool_order = sorted(range(nb, len(options)), key=lambda j: -row[j])
        mid = distractor_start(len(pool_order), cfg.forget_distractor_quantile)
        for b, movie in enumerate(banned):
            below = [options[j] for j in pool_order if row[j] < row[b]]
            below = below[:3] if cfg.forget_distractors == "next" else [
                options[j] for j in pool_order[mid: mid + 3] if options[j] in below]
            forget.append(Probe(prompt=p.text, prefix=RANK_PREFIX, answer=movie.title,
                                distractors=below if len(below) == 3 else [],
                                family="recommendation", id=f"f-{p.id}-{b}"))
        best = pool_order[0]
        retain.append(Probe(prompt=p.text, prefix=RANK_PREFIX, answer=options[best],
                            distractors=[options[j] for j in pool_order[1:4]],
                            family="recommendation", id=f"r-{p.id}"))
    facts: list[Probe] = []
    neighbour_facts: list[Probe] = []
    eval_probes: list[Probe] = []
    seen_neighbours: set[str] = set()  # a film near two banned ones is one neighbour
    for movie in banned:
        pat = [title_pattern(movie.title)]
        facts += fact_probes(movie, catalog, "train", rng, keys, "forget", "description")
        for probe in fact_probes(movie, catalog, "eval", rng, keys, "forget", "description"):
            probe.leak_patterns = pat
            eval_probes.append(probe)
        clean = [p for p in eval_prompts if not names_banned(p, keys)]
        for p in clean[:MAX_EVAL_RECOMMENDATION_PROBES]:
            eval_probes.append(Probe(prompt=p.text, prefix=RANK_PREFIX, answer=movie.title,
                                     distractors=distractors_for(movie, catalog, rng, keys),
                                     split="forget", family="recommendation",
                                     id=f"rec-{p.id}-{movie.key.replace(' ', '-')}",
                                     leak_patterns=pat))
        for other, family in neighbours(movie, catalog, keys):
            if other.key in seen_neighbours:
                continue
            seen_neighbours.add(other.key)
            train = fact_probes(other, catalog, "train", rng, keys, "neighbor", "neighbour")
            neighbour_facts += train[: cfg.facts_per_neighbour]
            held = fact_probes(other, catalog, "eval", rng, keys, "neighbor", family)
            eval_probes += held[:2]
    forget += _keep_known(model, tok, facts)
    retain += neighbour_facts
    spec = {
        "name": "ban: " + ", ".join(m.title for m in banned),
        "description": "Recommender ban built by `aglora ban`: the model must stop recommending "
                       "or naming these titles and keep its other recommendations.",
        "forget": [_item(p) for p in forget],
        "retain": [_item(p) for p in retain],
        "leak_patterns": [title_pattern(m.title) for m in banned],
        "probes": ["probes.jsonl"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "probes.jsonl",
               "".join(json.dumps(p.to_dict()) + "\n" for p in eval_probes))
    write_text(out_dir / "concept.yaml", yaml.safe_dump(spec, sort_keys=False, width=100))
    counts = {"forget": len(forget), "forget_with_choice": sum(p.has_choice for p in forget),
              "retain": len(retain), "eval_probes": len(eval_probes),
              "training_prompts": len(prompts), "pool": len(pool)}
    log.info(f"[aglora] ban spec: {counts}")
    return counts


def base_list_items(model: nn.Module, tok, catalog: Catalog, prompts: list[RecPrompt],
                    banned: set[str], cfg: RecConfig,
                    ranked: list[list[str]] | None = None) -> tuple[list[Probe], Counter]:
    """Retain items: each training prompt answered by the base model's own greedy list, where
    that list names no banned title (the KL term then keeps whole lists, not only the first
    item); with `cfg.replace_in_lists`, the other lists too, their banned items replaced by the
    prompt's best-ranked titles in `ranked` (per prompt, best first). Also returns in how many
    of these lists each catalogue title appears."""
    from aglora.model.decode import generate
    from aglora.recommend.matcher import TitleMatcher
    matcher = TitleMatcher(catalog.titles)
    gens = generate(model, tok, [Probe(prompt=p.text) for p in prompts], 0,
                    max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch,
                    desc="ban: base lists on training prompts")
    out = []
    replaced = 0
    listed = Counter(k for (text,) in gens for k in set(matcher.find(text)))
    for r, (p, (text,)) in enumerate(zip(prompts, gens, strict=True)):
        if not text.strip():
            continue
        if not set(matcher.find(text)) & banned:
            out.append(Probe(prompt=p.text, answer=text, family="list", id=f"l-{p.id}"))
        elif cfg.replace_in_lists and ranked is not None:
            edited = replace_banned_items(text, matcher, banned, ranked[r])
            if edited is not None:
                out.append(Probe(prompt=p.text, answer=edited, family="list-replaced",
                                 id=f"lr-{p.id}"))
                replaced += 1
    log.info(f"[aglora] {len(out) - replaced} of {len(prompts)} base lists on training prompts "
             f"kept as retain items, {replaced} more with their banned items replaced")
    return out, listed


def protected_titles(listed: Counter, catalog: Catalog, banned: set[str], n: int) -> list[str]:
    """The n catalogue titles the base model lists most often (ties: catalogue order), the
    titles a ban most easily drags down with it. Left out: the banned titles and titles that
    begin with one ("The Matrix Reloaded" for The Matrix), whose tokens the ban must lower."""
    order = {m.key: i for i, m in enumerate(catalog.movies)}

    def allowed(k: str) -> bool:
        return k in order and not any(k == b or k.startswith(b + " ") for b in banned)
    keys = sorted(filter(allowed, listed), key=lambda k: (-listed[k], order[k]))
    return [catalog.get(k).title for k in keys[:n]]


def protected_items(prompts: list[RecPrompt], titles: list[str]) -> list[Probe]:
    """Retain items, family `protected`: training prompt r as the start of a list whose first
    item is protected title r mod n (one item per prompt, so they do not crowd out the rest)."""
    if not titles:
        return []
    return [Probe(prompt=p.text, prefix=RANK_PREFIX, answer=titles[r % len(titles)],
                  family="protected", id=f"p-{p.id}") for r, p in enumerate(prompts)]


def replace_banned_items(text: str, matcher, banned: set[str], ranked: list[str]) -> str | None:
    """`text` with each list line naming a banned title rewritten as `<marker> <title>`, the
    title the first of `ranked` that the list does not hold; None when a banned title is left
    (named in running text) or no line was replaced."""
    from aglora.recommend.matcher import normalize
    held = set(matcher.find(text))
    spare = [t for t in ranked if normalize(t) not in held and normalize(t) not in banned]
    lines, changed = text.split("\n"), False
    for i, line in enumerate(lines):
        m = ITEM_MARKER.match(line)
        if not m or matcher.match_item(line[m.end():]) not in banned:
            continue
        if not spare:
            return None
        lines[i] = m.group(0) + spare.pop(0)
        changed = True
    edited = "\n".join(lines)
    if not changed or set(matcher.find(edited)) & banned:
        return None
    return edited


def _item(p: Probe) -> dict:
    d = {k: v for k, v in p.to_dict().items() if k != "split" and v not in ("", [], None)}
    return d
