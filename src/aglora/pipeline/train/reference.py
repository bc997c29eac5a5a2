"""The base model's side of training, computed once before the first step.

`base_view` gives the model that plays the base: the run's peft model with its adapter disabled
(no second copy of the weights), or an explicit `reference` (full-parameter methods, which train
a copy). From it come NPO's reference log-probabilities and the `forget_others_kl` targets
(`base_answer_side`, one pass over the forget answers in batches of whole contexts, so that a
ban's list prompt runs once for all its titles) and the retain items' base logits for the
KL term (`cached_base_logits`, kept while they fit in `BASE_LOGITS_CACHE_BYTES`), turned once
into what the KL needs of the base (`kl_target`: the distribution, without the blocked tokens,
and its negative entropy) so that a step does not recompute the base's log-probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.model.adapter import adapter_disabled
from aglora.model.forward import (
    causal_lm,
    logits_at,
    target_logprobs_from_logits,
)
from aglora.model.likelihood import margin, score_options
from aglora.model.tokens import encode
from aglora.pipeline.train.targets import answer_batch

BASE_LOGITS_CACHE_BYTES = 1 << 30  # keep the retain items' base logits when they fit in 1 GiB


@contextmanager
def base_view(model: nn.Module, reference: nn.Module | None) -> Iterator[nn.Module]:
    """The model that plays the base: `reference` if given, else `model` with its adapter off."""
    if reference is not None:
        yield reference
    else:
        with adapter_disabled(model):
            yield model


@torch.no_grad()
def cached_base_logits(model: nn.Module, tok, items: list[Probe], batch_size: int,
                       reference: nn.Module | None,
                       limit_bytes: int | None = None) -> list[torch.Tensor] | None:
    """Per retain item, the base model's logits at its content positions [n_content_i, vocab];
    None when they would take more than `limit_bytes` (default `BASE_LOGITS_CACHE_BYTES`).

    A row's content positions do not depend on the rest of its batch (right padding), so the
    logits of any retain batch are the items' tensors concatenated in batch order.
    """
    if not items:
        return None
    device = next(model.parameters()).device
    vocab = _causal_lm_vocab(model)
    n_content = [int(encode(tok, [p], [p.answer or ""]).content_mask.sum()) for p in items]
    limit = BASE_LOGITS_CACHE_BYTES if limit_bytes is None else limit_bytes
    if sum(n_content) * vocab * 4 > limit:
        return None
    out: list[torch.Tensor] = []
    with base_view(model, reference) as ref_model:
        for s in range(0, len(items), batch_size):
            chunk = items[s: s + batch_size]
            b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)
            logits = logits_at(ref_model, b, b.content_mask).float()  # [n, vocab]
            out += list(logits.split([int(c) for c in b.content_mask.sum(-1)]))
    return out


@torch.no_grad()
def base_answer_side(model: nn.Module, tok, items: list[Probe], cfg: TrainConfig,
                     reference: nn.Module | None, want_logp: bool,
                     blocked_ids: list[list[list[int]]] | None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The base model on the forget answers, in one pass over them: the summed answer
    log-probability per item (NPO's reference, [n_items]; zeros unless `want_logp`) and, given
    `blocked_ids` (per item, per answer token: the token ids to take out, `pushed_tokens`), per
    item the next-token distribution at its answer tokens with those tokens removed
    ([n_answer_i, vocab], the `forget_others_kl` term's target; kept on the CPU)."""
    want_blocked = blocked_ids is not None
    ref_logp = torch.zeros(len(items))
    blocked: list[torch.Tensor | None] = [None] * len(items)
    if not (want_logp or want_blocked):
        return ref_logp, []
    device = next(model.parameters()).device
    with base_view(model, reference) as ref_model:
        for idx in context_batches(items, cfg.batch_size):
            b = answer_batch(tok, [items[i] for i in idx], cfg.forget_skip_leading).to(device)
            logits = logits_at(ref_model, b, b.target_mask)  # [n_answer_tokens, vocab]
            ref_logp[idx] = target_logprobs_from_logits(logits, b).cpu()
            if want_blocked:
                rows = [ids for i in idx for ids in blocked_ids[i]]
                target = blocked_distribution(
                    logits, mask_from_lists(rows, logits.shape[-1], logits.device)).cpu()
                for i, t in zip(idx, target.split([int(c) for c in b.target_mask.sum(-1)]),
                                strict=True):
                    blocked[i] = t
    return ref_logp, blocked if want_blocked else []


def base_margins(model: nn.Module, tok, items: list[Probe], reference: nn.Module | None
                 ) -> torch.Tensor:
    """[n_items] the base model's margin of each item's answer over its best distractor (summed
    log-probs of the whole options, as the checks score them); 0 for items without
    distractors."""
    out = torch.zeros(len(items))
    with base_view(model, reference) as ref_model:
        scores = score_options(ref_model, tok, items, batch_size=64)
    for i, row in enumerate(scores):
        if len(row) > 1:
            out[i] = margin(row)
    return out


def context_batches(items: list[Probe], rows: int) -> list[list[int]]:
    """Item indices in batches of whole contexts (`Probe.context`): items sorted by context, a
    batch closed once it holds at least `rows` items and the next item starts another context.

    A batch then runs each shared prompt once (`aglora.model.forward` groups rows by prefix);
    where no two items share a context, the batches are `rows` items each.
    """
    order = sorted(range(len(items)), key=lambda i: items[i].context)
    batches: list[list[int]] = []
    for i in order:
        if (not batches or (len(batches[-1]) >= rows
                            and items[i].context != items[batches[-1][-1]].context)):
            batches.append([])
        batches[-1].append(i)
    return batches


def _causal_lm_vocab(model: nn.Module) -> int:
    lm = causal_lm(model)
    return lm.get_output_embeddings().weight.shape[0]


def mask_from_lists(ids: list[list[int]], vocab: int,
                    device: torch.device | None = None) -> torch.Tensor:
    """[len(ids), vocab] bool with row i true at the token ids of `ids[i]`."""
    mask = torch.zeros(len(ids), vocab, dtype=torch.bool, device=device)
    for i, row in enumerate(ids):
        mask[i, row] = True
    return mask


def blocked_distribution(base_logits: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """The base model's next-token distribution with the blocked tokens of each position taken
    out and the rest renormalised: what a decode-time blocklist samples from.

    base_logits [n_positions, vocab], blocked [n_positions, vocab] bool (`mask_from_lists`)
    -> [n_positions, vocab].
    """
    p = torch.softmax(base_logits.float(), -1)
    p = p.masked_fill(blocked, 0.0)
    return p / p.sum(-1, keepdim=True)


def negative_entropy(p: torch.Tensor) -> torch.Tensor:
    """sum_v p_v log p_v per position (0 log 0 = 0): [n_positions, vocab] -> [n_positions]."""
    return torch.xlogy(p, p).sum(-1)


def kl_target(base_logits: torch.Tensor, blocked: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """What a KL toward the base model needs of it, fixed for the whole run: the base
    distribution (without the `blocked` tokens, renormalised, where any are given:
    `blocked_distribution`) [n_positions, vocab] and its `negative_entropy` [n_positions]."""
    if blocked is None or not bool(blocked.any()):
        p = torch.softmax(base_logits.float(), -1)
    else:
        p = blocked_distribution(base_logits, blocked)
    return p, negative_entropy(p)
