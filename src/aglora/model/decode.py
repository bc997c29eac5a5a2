"""Batched, seeded generation and the text statistics computed on it.

Greedy generation plus `n_samples` seeded samples per probe. Chat probes are generated from the
chat template alone (no assistant prefix), so the model answers freely. The decoding loop is our
own rather than `model.generate` for two savings that matter on CPU: the system prompt shared by a
batch runs once, and each prompt runs once for its greedy and sampled continuations (generate's
`num_return_sequences` repeats the prompt before the forward). A test checks greedy output
against `model.generate`.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from aglora.concepts import Probe
from aglora.model.prefill import decoder_and_head, prefill
from aglora.model.tokens import chat_prefix_text, context_ids


def generation_context(tok, probe: Probe) -> str:
    return chat_prefix_text(tok, probe.prompt) if probe.format == "chat" else probe.prompt


def _stop_ids(model: nn.Module, tok) -> list[int]:
    """Token ids that end a generation: the model's generation config, else the tokenizer's EOS."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids]
    ids = [i for i in [*ids, tok.eos_token_id] if i is not None]
    return sorted(set(ids))


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator
           ) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) -> [rows].

    Inverse-CDF sampling: one uniform draw per row against the cumulative distribution (float64).
    `torch.multinomial` draws one exponential per vocabulary entry instead, a visible share of a
    decoding step on CPU with a large vocabulary.
    """
    probs = torch.softmax(logits.double() / temperature, -1)  # [rows, vocab]
    cdf = probs.cumsum(-1)
    u = torch.rand((len(cdf), 1), generator=generator, dtype=cdf.dtype, device=cdf.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_max(cdf.shape[-1] - 1)[:, 0]


def blocked_tokens(history: list[int], blocked: list[list[int]]) -> list[int]:
    """Tokens that would complete a blocked sequence after `history` (the row's ids so far):
    the last token of each sequence whose other tokens end the history (transformers'
    `bad_words_ids` rule; a one-token sequence is always blocked)."""
    out = []
    for seq in blocked:
        head = seq[:-1]
        if not head or history[len(history) - len(head):] == head:
            out.append(seq[-1])
    return out


@torch.no_grad()
def _generate_rows(model: nn.Module, rows: list[list[int]], n_samples: int, temperature: float,
                   max_new_tokens: int, stop_ids: list[int], pad_id: int,
                   generator: torch.Generator, blocked: list[list[int]] | None = None
                   ) -> list[list[list[int]]]:
    """Per prompt: [greedy, sample_1..n] new token ids (stop token excluded).

    The prompts run once (shared prefix, see aglora.model.prefill); the KV cache is then repeated
    so the greedy row and the sampled rows of a prompt decode together in one batch. Rows that
    reach a stop token leave the batch. `blocked`: token sequences never to be produced (decode-time
    blocklist, see `blocked_tokens`).
    """
    decoder, head = decoder_and_head(model)
    device = next(model.parameters()).device
    per_prompt = 1 + n_samples
    filled = prefill(model, rows, pad_id)
    cache, mask, hidden = filled.cache, filled.attention_mask, filled.last_hidden
    if per_prompt > 1:
        cache.batch_repeat_interleave(per_prompt)
        mask = mask.repeat_interleave(per_prompt, 0)      # [R, P + width]
        hidden = hidden.repeat_interleave(per_prompt, 0)  # [R, hidden]
    n_rows = mask.shape[0]
    greedy_row = torch.arange(n_rows, device=device) % per_prompt == 0  # [alive]
    stops = torch.tensor(stop_ids, device=device)
    position = mask.sum(-1)                                # [alive]
    alive = torch.arange(n_rows, device=device)            # [alive] -> original row
    new_ids = torch.full((n_rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    history = [list(rows[r // per_prompt]) for r in range(n_rows)] if blocked else []
    for step in range(max_new_tokens):
        logits = head(hidden).float()                      # [alive, vocab]
        if blocked:
            for a, r in enumerate(alive.tolist()):
                ids = blocked_tokens(history[r], blocked)
                if ids:
                    logits[a, ids] = float("-inf")
        token = logits.argmax(-1)
        if n_samples and not bool(greedy_row.all()):
            sampling = (~greedy_row).nonzero()[:, 0]
            token[sampling] = sample(logits[sampling], temperature, generator)
        new_ids[alive, step] = token
        if blocked:
            for r, t in zip(alive.tolist(), token.tolist(), strict=True):
                history[r].append(t)
        keep = (~torch.isin(token, stops)).nonzero()[:, 0]
        if keep.numel() == 0 or step == max_new_tokens - 1:
            break
        if keep.numel() < alive.numel():  # drop finished rows: later steps cost less
            cache.batch_select_indices(keep)
            alive, token, mask = alive[keep], token[keep], mask[keep]
            position, greedy_row = position[keep], greedy_row[keep]
        mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=device)], 1)
        hidden = decoder(input_ids=token[:, None], attention_mask=mask,
                         position_ids=position[:, None], cache=cache,
                         use_cache=True).last_hidden_state[:, -1]
        position = position + 1
    new = new_ids.tolist()                                 # [R, max_new_tokens]
    out: list[list[list[int]]] = [[] for _ in rows]
    for r, ids in enumerate(new):
        cut = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
        out[r // per_prompt].append(ids[:cut])
    return out


@torch.no_grad()
def generate(model: nn.Module, tok, probes: list[Probe], n_samples: int = 2,
             temperature: float = 0.7, max_new_tokens: int = 32, seed: int = 0,
             batch_size: int = 16, desc: str | None = None,
             blocked: list[list[int]] | None = None) -> list[list[str]]:
    """For each probe: [greedy, sample_1..sample_n] continuations (decoded, special tokens cut).

    `batch_size` counts decoded rows (prompts x (1 + n_samples)). Sampling is pure temperature
    sampling (no top-k/top-p) from a generator seeded per batch, so results repeat exactly.
    `blocked`: token sequences the decoder may not produce (a decode-time blocklist).
    """
    out: list[list[str]] = [[] for _ in probes]
    stop_ids = _stop_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    # Same format together (chat prompts share the template head), then by length.
    order = sorted(range(len(probes)), key=lambda i: (probes[i].format, len(probes[i].prompt)))
    per_batch = max(1, batch_size // (1 + n_samples))
    starts = list(range(0, len(order), per_batch))
    for s in tqdm(starts, desc=desc, leave=False, disable=desc is None):
        idx = order[s: s + per_batch]
        rows = [context_ids(tok, probes[i], generation_context(tok, probes[i])) for i in idx]
        generator = torch.Generator(device=next(model.parameters()).device)
        generator.manual_seed(seed + s)
        new = _generate_rows(model, rows, n_samples, temperature, max_new_tokens, stop_ids, pad,
                             generator, blocked)
        for i, per_row in zip(idx, new, strict=True):
            out[i] = [_decode(tok, ids) for ids in per_row]
    return out


def _decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True).strip()


