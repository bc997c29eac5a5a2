"""Likelihood-choice scoring: does the answer beat every distractor?

For a probe with an answer and distractors, each option is scored as the *summed* log-probability
of its tokens after the probe's context (summed, not averaged: on thin knowledge the sum is the
sharper instrument, docs/method.md, section 11).

The options of a probe share its context, so the context runs once (KV cache) and the cache is
copied to each option: far fewer token-forwards than scoring each context+option sequence,
which dominates evaluation time on CPU. The system prompt the contexts of a batch share runs once
too (`aglora.model.prefill`), and probes with the same context (a ban's items: one prompt, one
item per banned title) share one context run; an option that several of them share (the same
distractors on one prompt) is scored once for all of them. The tests keep
the plain one-sequence-per-option path (`tests/reference.py`) and check that the two agree.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.model.decode import generation_context
from aglora.model.forward import logits_at, target_logprobs_from_logits
from aglora.model.prefill import decoder_and_head, prefill
from aglora.model.tokens import context_ids, context_text, encode, pad_right, target_ids


def score_options(model: nn.Module, tok, probes: list[Probe], batch_size: int = 16,
                  progress: str | None = None) -> list[list[float]]:
    """Summed log-prob of [answer, *distractors] for each probe with a choice ([] otherwise)."""
    return score_options_with_lengths(model, tok, probes, batch_size, progress)[0]


def _tokenize(tok, probe: Probe) -> tuple[list[int], list[list[int]]]:
    ctx = context_text(tok, probe)
    return context_ids(tok, probe, ctx), [target_ids(tok, ctx, o)
                                          for o in [probe.answer, *probe.distractors]]


@torch.no_grad()
def _score_chunk(model: nn.Module, tok, chunk: list[Probe]) -> list[list[tuple[float, int]]]:
    decoder, head = decoder_and_head(model)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    encoded = [_tokenize(tok, p) for p in chunk]
    contexts: dict[tuple[int, ...], int] = {}  # context ids -> row of the prefill batch
    ctx_row = [contexts.setdefault(tuple(c), len(contexts)) for c, _ in encoded]  # [probes]
    filled = prefill(model, [list(c) for c in contexts], pad)  # shared system prompt runs once
    cache, ctx_mask = filled.cache, filled.attention_mask  # ctx_mask [B, P + width]
    first_logp = torch.log_softmax(head(filled.last_hidden).float(), -1)  # [B, vocab]

    unique: dict[tuple[int, tuple[int, ...]], int] = {}  # (context row, option ids) -> row
    slots = [[unique.setdefault((ctx_row[b], tuple(ids)), len(unique)) for ids in opts]
             for b, (_, opts) in enumerate(encoded)]  # per probe: its options' rows
    flat = list(unique)  # (context row, option ids), each scored once
    rows = torch.tensor([c for c, _ in flat], device=device)  # [N] -> context row
    cache.batch_select_indices(rows)
    opt, opt_mask = pad_right(tok, [list(ids) for _, ids in flat])  # [N, To] each
    o_width = opt.shape[1]
    opt, opt_mask = opt.to(device), opt_mask.to(device)
    full_mask = torch.cat([ctx_mask[rows], opt_mask], dim=1)
    opt_pos = ctx_mask[rows].sum(-1, keepdim=True) + torch.arange(o_width, device=device)
    hidden = decoder(input_ids=opt, attention_mask=full_mask, position_ids=opt_pos,
                     cache=cache, use_cache=True).last_hidden_state  # [N, To, H]
    # Token k of an option (k >= 1) is predicted at option position k-1; token 0 by the context.
    sums = first_logp[rows].gather(-1, opt[:, :1])[:, 0]  # [N]
    if o_width > 1:
        pred_mask = opt_mask[:, 1:].bool()  # [N, To-1]
        logp = torch.log_softmax(head(hidden[:, :-1][pred_mask]).float(), -1)
        picked = logp.gather(-1, opt[:, 1:][pred_mask][:, None])[:, 0]
        row_idx = pred_mask.nonzero()[:, 0]
        sums = sums.index_add(0, row_idx, picked)
    values = sums.tolist()
    return [[(values[n], len(flat[n][1])) for n in probe_slots] for probe_slots in slots]


def _chunks(probes: list[Probe], idx: list[int], contexts_per_chunk: int) -> list[list[int]]:
    """Consecutive runs of `idx` with at most `contexts_per_chunk` distinct contexts each and at
    most 16x as many distinct (context, option) rows (the rows of 4x as many probes of 4 options
    that share none; probes of one context that share options fit more)."""
    chunks: list[list[int]] = []
    seen: set[tuple[str, str, str]] = set()
    rows: set[tuple[tuple[str, str, str], str]] = set()
    for i in idx:
        p = probes[i]
        key = p.context
        new = {(key, o) for o in [p.answer or "", *p.distractors]} - rows
        full = not chunks or (len(rows) + len(new) > 16 * contexts_per_chunk and chunks[-1])
        if full or (key not in seen and len(seen) >= contexts_per_chunk):
            chunks.append([])
            seen, rows = set(), set()
        chunks[-1].append(i)
        seen.add(key)
        rows |= {(key, o) for o in [p.answer or "", *p.distractors]}
    return chunks


def score_options_with_lengths(model: nn.Module, tok, probes: list[Probe], batch_size: int = 16,
                               progress: str | None = None
                               ) -> tuple[list[list[float]], list[list[int]]]:
    """(summed log-probs, token counts) of [answer, *distractors] for each probe."""
    idx = [i for i, p in enumerate(probes) if p.has_choice]
    # Same format together (chat probes share the template head), then by length (less padding),
    # then by text, so that probes with the same context fall into the same chunk.
    idx.sort(key=lambda i: (probes[i].format, len(probes[i].prompt) + len(probes[i].prefix),
                            probes[i].prompt, probes[i].prefix))
    scores: list[list[float]] = [[] for _ in probes]
    lengths: list[list[int]] = [[] for _ in probes]
    chunks = _chunks(probes, idx, max(1, batch_size // 4))  # a probe has ~4 option rows
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc=progress, leave=False)
    for chunk_idx in chunks:
        for i, rows in zip(chunk_idx, _score_chunk(model, tok, [probes[i] for i in chunk_idx]),
                           strict=True):
            scores[i] = [v for v, _ in rows]
            lengths[i] = [n for _, n in rows]
    return scores, lengths


def choice_correct(scores: list[float]) -> bool:
    """Answer (index 0) strictly beats every distractor."""
    return len(scores) > 1 and all(scores[0] > s for s in scores[1:])


def margin(scores: list[float]) -> float:
    """Answer log-prob minus the best distractor's (nats)."""
    return scores[0] - max(scores[1:])


def truth_ratio(scores: list[float], lengths: list[int]) -> float:
    """TOFU's truth ratio: mean length-normalised P(distractor) over P(answer)^(1/|answer|)."""
    norm = [s / max(n, 1) for s, n in zip(scores, lengths, strict=True)]
    return sum(math.exp(x - norm[0]) for x in norm[1:]) / (len(norm) - 1)


def choice_summary(scores: list[list[float]]) -> tuple[float, float]:
    """(accuracy, mean margin) over the probes that have options."""
    rows = [s for s in scores if len(s) > 1]
    if not rows:
        return float("nan"), float("nan")
    acc = sum(choice_correct(s) for s in rows) / len(rows)
    return acc, sum(margin(s) for s in rows) / len(rows)


@torch.no_grad()
def continuation_nll(model: nn.Module, tok, probes: list[Probe], texts: list[str],
                     batch_size: int = 16) -> list[float]:
    """Mean negative log-likelihood per token of each text as the continuation of its probe's
    generation context (the prompt, chat template applied, without the scoring prefix): how
    plausible the model finds an answer as language. NaN for an empty text."""
    device = next(model.parameters()).device
    out: list[float] = []
    for s in range(0, len(probes), batch_size):
        chunk, chunk_texts = probes[s: s + batch_size], texts[s: s + batch_size]
        batch = encode(tok, chunk, chunk_texts,
                       contexts=[generation_context(tok, p) for p in chunk]).to(device)
        logp = target_logprobs_from_logits(logits_at(model, batch, batch.target_mask), batch)
        n_tok = batch.target_mask.sum(-1)  # [batch]
        out += [float(-lp / n) if n > 0 else float("nan")
                for lp, n in zip(logp.tolist(), n_tok.tolist(), strict=True)]
    return out
