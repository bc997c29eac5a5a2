"""The prompts of a ban, a survey or a recommendation request against the model's context.

Checked right after the model loads, before it runs on any of them, with the check that concept
items and probes get (`aglora.model.tokens.check_lengths`): a prompt too long for the model is
one `aglora: error:` line, not a traceback or a multi-gigabyte allocation minutes later. A
ban's prompts are made of catalogue entries, so a title, director or cast name that is too long
is found here:

* profile prompts (training and held-apart): each with the ranking prefix and the catalogue's
  longest title (the ranking and the forget/retain recommendation items), and each with a list of
  `recommend.max_new_tokens` generated tokens (the lists and the `list` retain items);
* fact prompts describing the banned films and their neighbours, each with the longest title.
"""

from __future__ import annotations

import dataclasses
import random

from aglora.concepts import Probe
from aglora.model.tokens import check_lengths, target_ids
from aglora.recommend.catalog import Catalog, Movie
from aglora.recommend.prompts import RecPrompt, fact_probes, neighbours
from aglora.recommend.ranking import RANK_PREFIX
from aglora.recommend.settings import RecConfig

CATALOG_FIX = ("shorten the long titles or names in the catalogue (--catalog), or lower "
               "recommend.max_new_tokens")


def longest_title(tok, catalog: Catalog) -> str:
    """The catalogue title with the most tokens after the ranking prefix."""
    return max(catalog.titles, key=lambda t: len(target_ids(tok, RANK_PREFIX, t)))


def check_prompt_lengths(tok, model, catalog: Catalog, prompts: list[RecPrompt],
                         cfg: RecConfig, rank: bool = True) -> None:
    """Every profile prompt fits with its generated list and (`rank`) the ranking prefix and
    the longest title."""
    plain = [Probe(prompt=p.text, id=p.id) for p in prompts]
    check_lengths(tok, model, plain, "recommendation prompt", new_tokens=cfg.max_new_tokens,
                  fix=CATALOG_FIX)
    if rank:
        title = longest_title(tok, catalog)
        ranked = [dataclasses.replace(p, prefix=RANK_PREFIX, answer=title) for p in plain]
        check_lengths(tok, model, ranked, "recommendation prompt", fix=CATALOG_FIX)


def check_fact_lengths(tok, model, catalog: Catalog, movies: list[Movie]) -> None:
    """Every fact prompt about the banned films and their neighbours fits with the longest
    title."""
    keys = {m.key for m in movies}
    rng = random.Random(0)  # the distractors do not matter: each gets the longest title
    films = [x for m in movies for x in (m, *(o for o, _ in neighbours(m, catalog, keys)))]
    title = longest_title(tok, catalog)
    facts = [dataclasses.replace(p, answer=title, distractors=[]) for x in films
             for split in ("train", "eval")
             for p in fact_probes(x, catalog, split, rng, keys, "forget", "description")]
    check_lengths(tok, model, facts, "fact prompt", fix=CATALOG_FIX)


def check_ban_lengths(tok, model, catalog: Catalog, movies: list[Movie],
                      prompts: list[RecPrompt], cfg: RecConfig) -> None:
    """Everything a ban puts before the model: its profile prompts and its fact prompts."""
    check_prompt_lengths(tok, model, catalog, prompts, cfg)
    check_fact_lengths(tok, model, catalog, movies)


def check_request_length(tok, model, prompt: str, max_new_tokens: int) -> None:
    """`aglora recommend "PROMPT"`: the request and the list generated after it fit."""
    check_lengths(tok, model, [Probe(prompt=prompt)], "the request", new_tokens=max_new_tokens,
                  fix="shorten it, or lower --max-new-tokens")
