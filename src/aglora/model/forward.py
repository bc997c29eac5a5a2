"""Model calls that compute logits only where they are needed.

The output projection (vocab x d_model; 49,152 x 576 in SmolLM2, 151,936 x 2,048 in Qwen2.5-3B) is
a large share of a forward pass, yet scoring an answer needs logits only at the answer's
positions, and a KL term only at content positions. `logits_at` runs the decoder, gathers the
hidden states of the selected positions and projects only those. This holds for Llama/Qwen/
Mistral-style models, whose logits are a plain linear map of the last hidden state (models with
logit soft-capping or scaling would need that applied here).

The rows of a batch usually start with the same tokens: the chat template's system prompt is
about half of a short chat probe. `decoder_hidden` runs that shared prefix once (batch 1), repeats
its keys and values across the batch and runs only each row's own tokens after it; gradients flow
through the shared part (it is summed over the rows, as it would be). A test checks logits and
LoRA gradients against the plain path. `prefix_sharing(False)` turns that pass off for a while:
under FSDP (`aglora.pipeline.train.shares`) every process must make the same layer calls, and
whether a batch has a shared prefix depends on its rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aglora.model.tokens import Batch


def causal_lm(model: nn.Module) -> nn.Module:
    """The causal LM inside a peft wrapper (a plain model: itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a second decoder call
_PREFIX_SHARING = [True]  # set by `prefix_sharing`


@contextmanager
def prefix_sharing(enabled: bool) -> Iterator[None]:
    """Inside, `decoder_hidden` runs a shared prefix once only if `enabled`; restored on exit."""
    before = _PREFIX_SHARING[0]
    _PREFIX_SHARING[0] = enabled
    try:
        yield
    finally:
        _PREFIX_SHARING[0] = before


def shared_prefix_length(batch: Batch) -> int:
    """Tokens every row of a right-padded batch starts with, leaving each row one of its own."""
    ids, mask = batch.input_ids, batch.attention_mask
    if ids.shape[0] < 2 or not bool(mask[:, 0].all()):
        return 0
    limit = int(mask.sum(-1).min()) - 1
    if limit <= 0:
        return 0
    differs = (ids[:, :limit] != ids[:1, :limit]).any(0).nonzero()  # columns where rows differ
    return int(differs[0, 0]) if len(differs) else limit


def decoder_hidden(decoder: nn.Module, batch: Batch, share_prefix: bool = True) -> torch.Tensor:
    """Last hidden states [batch, seq, d_model] of a right-padded batch (shared prefix once)."""
    n_rows, width = batch.input_ids.shape
    # Gradient checkpointing turns the cache off in training: the rows would lose the prefix.
    checkpointing = decoder.training and getattr(decoder, "gradient_checkpointing", False)
    on = share_prefix and _PREFIX_SHARING[0] and not checkpointing
    shared = shared_prefix_length(batch) if on else 0
    if shared < MIN_SHARED_PREFIX:
        return decoder(input_ids=batch.input_ids,
                       attention_mask=batch.attention_mask).last_hidden_state
    from transformers import DynamicCache

    cache = DynamicCache()
    positions = torch.arange(width, device=batch.input_ids.device)[None]  # [1, seq]
    prefix = decoder(input_ids=batch.input_ids[:1, :shared], position_ids=positions[:, :shared],
                     cache=cache, use_cache=True).last_hidden_state  # [1, P, d_model]
    cache.batch_repeat_interleave(n_rows)
    own = decoder(input_ids=batch.input_ids[:, shared:], attention_mask=batch.attention_mask,
                  position_ids=positions[:, shared:].expand(n_rows, -1), cache=cache,
                  use_cache=True).last_hidden_state  # [batch, seq - P, d_model]
    return torch.cat([prefix.expand(n_rows, -1, -1), own], 1)


def logits_at(model: nn.Module, batch: Batch, positions: torch.Tensor,
              inputs_embeds: torch.Tensor | None = None, share_prefix: bool = True
              ) -> torch.Tensor:
    """Logits at positions where `positions` [batch, seq] is 1 -> [n_selected, vocab]."""
    lm = causal_lm(model)
    decoder = lm.get_decoder()
    if inputs_embeds is not None:
        hidden = decoder(inputs_embeds=inputs_embeds,
                         attention_mask=batch.attention_mask).last_hidden_state
    else:
        hidden = decoder_hidden(decoder, batch, share_prefix)  # [batch, seq, d_model]
    return lm.get_output_embeddings()(hidden[positions.bool()])  # [n_selected, vocab]


def next_token_ids(batch: Batch, positions: torch.Tensor) -> torch.Tensor:
    """The token each selected position predicts (input_ids shifted left) -> [n_selected]."""
    shifted = torch.roll(batch.input_ids, shifts=-1, dims=1)
    return shifted[positions.bool()]


def row_sums(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Sum per-position values [n_selected] back into their rows -> [batch]."""
    rows = positions.bool().nonzero()[:, 0]
    out = torch.zeros(positions.shape[0], dtype=values.dtype, device=values.device)
    return out.index_add(0, rows, values)


def logits_at_each(model: nn.Module, batch: Batch,
                   position_sets: list[torch.Tensor]) -> list[torch.Tensor]:
    """One decoder pass for several position masks [batch, seq] -> [[n_i, vocab], ...]."""
    union = torch.stack([m.bool() for m in position_sets]).any(0)  # [batch, seq]
    logits = logits_at(model, batch, union)  # [n_union, vocab]
    return [logits[m.bool()[union]] for m in position_sets]


def target_logprobs_from_logits(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed target log-probability per row from logits at the target positions -> [batch]."""
    logp = torch.log_softmax(logits.float(), -1)  # [n_target, vocab]
    picked = logp.gather(-1, next_token_ids(batch, batch.target_mask)[:, None])[:, 0]
    return row_sums(picked, batch.target_mask)


def target_logprobs(model: nn.Module, batch: Batch,
                    inputs_embeds: torch.Tensor | None = None,
                    share_prefix: bool = True) -> torch.Tensor:
    """Summed log-probability of each sequence's target tokens -> [batch]."""
    logits = logits_at(model, batch, batch.target_mask, inputs_embeds,
                       share_prefix)  # [n, vocab]
    logp = torch.log_softmax(logits.float(), -1)
    picked = logp.gather(-1, next_token_ids(batch, batch.target_mask)[:, None])[:, 0]
    return row_sums(picked, batch.target_mask)
