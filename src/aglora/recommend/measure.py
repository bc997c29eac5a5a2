"""Measure a model's recommendations: generated lists and catalogue rankings on eval prompts.

The base model's measurements are the same for every ban on the same model, catalogue and
prompts, so they are cached in `<aglora cache>/recommend/base-<key>.json` (key: model
fingerprint, catalogue fingerprint, prompts and generation settings; JSON, written atomically).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.recommend.catalog import Catalog
from aglora.recommend.prompts import RecPrompt
from aglora.recommend.ranking import title_scores
from aglora.recommend.settings import RecConfig
from aglora.runtime.cache import cached_json


def generate_lists(model: nn.Module, tok, prompts: list[RecPrompt], cfg: RecConfig,
                   label: str, blocked: list[list[int]] | None = None) -> list[list[str]]:
    """[greedy, sample_1..sample_n] per prompt (seeded, same seeds for base and after);
    `blocked`: token sequences the decoder may not produce (a decode-time blocklist)."""
    from aglora.model.decode import generate
    probes = [Probe(prompt=p.text, id=p.id) for p in prompts]
    return generate(model, tok, probes, cfg.n_samples, cfg.temperature, cfg.max_new_tokens,
                    cfg.seed_gen, cfg.gen_batch, desc=f"lists ({label})", blocked=blocked)


def rank_catalogue(model: nn.Module, tok, prompts: list[RecPrompt], catalog: Catalog,
                   cfg: RecConfig, label: str) -> torch.Tensor:
    """Scores [n_rank_prompts, n_titles] on the first n_rank_prompts eval prompts."""
    texts = [p.text for p in prompts[: cfg.n_rank_prompts]]
    return title_scores(model, tok, texts, catalog.titles, cfg.rank_chunk,
                        desc=f"rank catalogue ({label})")


def _cache_path(model: nn.Module, what: str, blob: dict) -> Path:
    from aglora.model.identity import weights_digest
    from aglora.runtime.cache import cache_dir, cache_key
    key = cache_key([weights_digest(model), blob])
    return cache_dir() / "recommend" / f"base-{what}-{key}.json"


def base_measurements(model: nn.Module, tok, prompts: list[RecPrompt], catalog: Catalog,
                      cfg: RecConfig, need_ranks: bool = True
                      ) -> tuple[list[list[str]], torch.Tensor | None]:
    """Base lists and (optionally) base rankings, from the cache when present."""
    from aglora.model.adapter import adapter_disabled
    cat = catalog.fingerprint()
    gen_path = _cache_path(model, "lists", {
        "catalog": cat, "prompts": [p.text for p in prompts],
        "gen": [cfg.n_samples, cfg.temperature, cfg.max_new_tokens, cfg.seed_gen, cfg.gen_batch]})
    rank_path = _cache_path(model, "ranks", {
        "catalog": cat, "prompts": [p.text for p in prompts[: cfg.n_rank_prompts]],
        "chunk": cfg.rank_chunk})
    with adapter_disabled(model):
        gens = cached_json(gen_path, lambda: generate_lists(model, tok, prompts, cfg, "base"))
        scores = None
        if need_ranks:
            scores = torch.tensor(cached_json(rank_path, lambda: rank_catalogue(
                model, tok, prompts, catalog, cfg, "base").tolist()))
    return gens, scores
