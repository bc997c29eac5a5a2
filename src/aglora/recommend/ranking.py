"""Rank the whole catalogue for a prompt by likelihood, and compare two rankings (NDCG@k).

A title's score for a prompt is the summed log-probability of ` TITLE` after the chat-templated
prompt and the assistant prefix `RANK_PREFIX` ("Here are five movies you might enjoy:\\n\\n1."),
i.e. how likely the model is to put that title first in its list. Titles are scored as the
options of probes (chunks of `chunk` titles per probe) with `likelihood.score_options_with_lengths`,
which runs the prompt once per chunk and shares its KV cache across the options.
Rank 1 is the most likely title; ties keep catalogue order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.model.likelihood import score_options_with_lengths

RANK_PREFIX = "Here are five movies you might enjoy:\n\n1."


def title_scores(model: nn.Module, tok, prompts: list[str], titles: list[str],
                 chunk: int = 104, batch_size: int = 4, desc: str | None = None
                 ) -> torch.Tensor:
    """Summed log-prob of each title as the first list item -> [n_prompts, n_titles]."""
    probes, where = [], []
    for p, text in enumerate(prompts):
        for s in range(0, len(titles), chunk):
            part = titles[s: s + chunk]
            if len(part) == 1:  # a probe needs an answer and at least one distractor
                part = [part[0], titles[0]]
            probes.append(Probe(prompt=text, prefix=RANK_PREFIX, answer=part[0],
                                distractors=part[1:], id=f"rank-{p}-{s}"))
            where.append((p, s))
    scores, _ = score_options_with_lengths(model, tok, probes, batch_size, progress=desc)
    out = torch.empty(len(prompts), len(titles))  # [n_prompts, n_titles]
    for (p, s), row in zip(where, scores, strict=True):
        n = min(chunk, len(titles) - s)
        out[p, s: s + n] = torch.tensor(row[:n])
    return out


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every title (1 = highest score; ties broken by index) -> same shape as scores."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    out = torch.empty_like(order)
    positions = torch.arange(1, scores.shape[-1] + 1).expand_as(order)
    out.scatter_(-1, order, positions)
    return out


def ndcg_at_k(base: list[float] | torch.Tensor, after: list[float] | torch.Tensor,
              exclude: set[int] | None = None, k: int = 10) -> float:
    """NDCG@k of the `after` ranking against the `base` ranking, over titles not in `exclude`.

    Relevance comes from the base ranking of the kept titles: the base top-1 has relevance k,
    the base k-th has 1, the rest 0. DCG = sum over the after top-k of rel / log2(position + 1);
    the ideal DCG is that of the base order, so an unchanged order scores exactly 1.
    """
    exclude = exclude or set()
    keep = [i for i in range(len(base)) if i not in exclude]
    base_t = torch.as_tensor(base, dtype=torch.float64)[keep]
    after_t = torch.as_tensor(after, dtype=torch.float64)[keep]
    k = min(k, len(keep))
    base_rank = ranks(base_t)
    rel = torch.clamp(k + 1 - base_rank, min=0).double()  # [n_keep]
    after_top = torch.sort(after_t, descending=True, stable=True).indices[:k]
    discounts = torch.tensor([1 / math.log2(i + 2) for i in range(k)], dtype=torch.float64)
    dcg = float((rel[after_top] * discounts).sum())
    ideal = float((torch.arange(k, 0, -1, dtype=torch.float64) * discounts).sum())
    return dcg / ideal
