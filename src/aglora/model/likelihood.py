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

Inside `aglora.model.forward.frozen_lower_layers` (training: the early-stopping checks and the
guards score the same items again and again while only the upper layers change), the options
are scored instead as whole context+option rows through `forward.logits_at`, whose decoder pass
takes the frozen layers' output from the cache of rows already seen and runs each row's shared
prompt once (`forward.prefix_groups`): from a row's second visit on, only the upper layers run.
The values are the same as the KV-cache path's up to float rounding (a test holds both to the
reference).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.model.decode import generation_context
from aglora.model.forward import caches_lower_layers, logits_at, target_logprobs_from_logits
from aglora.model.prefill import decoder_and_head, prefill
from aglora.model.tokens import (
    Batch,
    context_ids,
    context_text,
    encode,
    pad_right,
    target_ids,
)


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
    if caches_lower_layers(model):
        return _score_rows(model, tok, probes, idx, 4 * batch_size)
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


ROWS_PAD_LIMIT = 2.0  # a rows batch is cut before its padded grid exceeds 2x its tokens


@torch.no_grad()
def _score_rows(model: nn.Module, tok, probes: list[Probe], idx: list[int], max_rows: int
                ) -> tuple[list[list[float]], list[list[int]]]:
    """`score_options_with_lengths` on the probes `idx` (sorted by context) as context+option
    rows through `forward.logits_at` (module docstring): each distinct (context, option) once,
    batches of at most `max_rows` rows in context order, so the rows of a prompt share it."""
    device = next(model.parameters()).device
    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}  # (ctx, option) -> row
    slots: dict[int, list[int]] = {}  # probe -> its options' rows
    for i in idx:
        ctx, opts = _tokenize(tok, probes[i])
        slots[i] = [unique.setdefault((tuple(ctx), tuple(o)), len(unique)) for o in opts]
    flat = list(unique)
    values: list[float] = []
    for rows in _row_batches([len(c) + len(o) for c, o in flat], max_rows):
        input_ids, attention = pad_right(tok, [list(flat[r][0] + flat[r][1]) for r in rows])
        target = torch.zeros(input_ids.shape, dtype=torch.float32)
        for b, r in enumerate(rows):  # logits at t predict token t+1: the option's tokens
            n_ctx, n_opt = len(flat[r][0]), len(flat[r][1])
            target[b, n_ctx - 1: n_ctx + n_opt - 1] = 1.0
        batch = Batch(input_ids, attention, target, torch.zeros_like(target)).to(device)
        values += target_logprobs_from_logits(logits_at(model, batch, batch.target_mask),
                                              batch).tolist()  # [rows]
    scores: list[list[float]] = [[] for _ in probes]
    lengths: list[list[int]] = [[] for _ in probes]
    for i, probe_slots in slots.items():
        scores[i] = [values[r] for r in probe_slots]
        lengths[i] = [len(flat[r][1]) for r in probe_slots]
    return scores, lengths


def _row_batches(lengths: list[int], max_rows: int) -> list[list[int]]:
    """Consecutive runs of rows, at most `max_rows` each and cut before a row would make the
    padded grid (rows x longest) exceed `ROWS_PAD_LIMIT` times the run's tokens."""
    runs: list[list[int]] = []
    tokens = longest = 0
    for r, n in enumerate(lengths):
        grown = (len(runs[-1]) + 1) * max(longest, n) if runs else 0
        if (not runs or len(runs[-1]) >= max_rows
                or grown > ROWS_PAD_LIMIT * (tokens + n)):
            runs.append([])
            tokens = longest = 0
        runs[-1].append(r)
        tokens, longest = tokens + n, max(longest, n)
    return runs


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
