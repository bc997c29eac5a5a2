"""Model calls that compute logits only where they are needed.

The output projection (vocab x d_model; 49,152 x 576 in SmolLM2, 151,936 x 2,048 in Qwen2.5-3B) is
a large share of a forward pass, yet scoring an answer needs logits only at the answer's
positions, and a KL term only at content positions. `logits_at` runs the decoder, gathers the
hidden states of the selected positions and projects only those. This holds for Llama/Qwen/
Mistral-style models, whose logits are a plain linear map of the last hidden state (models with
logit soft-capping or scaling would need that applied here).

The rows of a batch usually start with the same tokens: the chat template's system prompt is
about half of a short chat probe, and a ban's forget items repeat each list prompt once per
banned title. `decoder_hidden` runs each shared prefix once: the rows are grouped by the
prefix they share (`prefix_groups`, the fewest tokens to run), one pass runs the distinct
prefixes, their keys and values are picked for each row, and a second pass runs only each
row's own tokens after its prefix; gradients flow through the prefixes (summed over their
rows, as they would be). Where grouping would not save a tenth of the tokens, the plain pass
runs. Tests check logits and LoRA gradients against the plain path. `prefix_sharing(False)`
turns that pass off for a while: under FSDP (`aglora.pipeline.train.shares`) every process must
make the same layer calls, and whether a batch has a shared prefix depends on its rows.

Rows of very different lengths (a retain batch mixes whole recommendation lists with short
answers) pad every short row to the longest one. `length_buckets` cuts such a batch into groups
of rows of similar length (sorted by length, cut by dynamic programming); each group runs on its
own, trimmed to its longest row and through its own shared prefixes, and the hidden states are
put back in the batch's order (zeros past each group's width). It is taken only where it runs under
`BUCKET_SHARE` of the token positions of the one-pass path, counting `PASS_TOKENS` for each extra
pass; `prefix_sharing(False)` turns it off too (it changes the layer calls).

Training changes only the layers from the lowest one holding a trainable parameter up, so the
inputs of that layer do not change from step to step. Inside `frozen_lower_layers(model)`, the
decoder passes of `model` take them from a cache of the rows seen so far (a row's inputs depend
only on its own tokens: right padding, causal attention) and run only the upper layers; rows
met for the first time run the lower layers once, without gradients (their shared prefixes
once, as above). That holds where the layers below take no part in training (masked LoRA,
whose adapter sits in the masked layers only; the base view with the adapter off) and all
layers are of one attention type, each attention module carrying its cache index; elsewhere
the full pass runs. Tests check logits and LoRA gradients against the full pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aglora.model.tokens import Batch


def causal_lm(model: nn.Module) -> nn.Module:
    """The causal LM inside a peft wrapper (a plain model: itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


MIN_SHARED_PREFIX = 4  # shorter common prefixes are not worth a second decoder call
SHARED_PATH_SHARE = 0.9  # the prefix path only where it runs under this share of the tokens
_PREFIX_SHARING = [True]  # set by `prefix_sharing`
BUCKET_SHARE = 0.85  # length buckets only where they run under this share of the positions
PASS_TOKENS = 32  # the fixed cost of one more decoder call, in token positions


@contextmanager
def prefix_sharing(enabled: bool) -> Iterator[None]:
    """Inside, `decoder_hidden` runs a shared prefix once only if `enabled`; restored on exit."""
    before = _PREFIX_SHARING[0]
    _PREFIX_SHARING[0] = enabled
    try:
        yield
    finally:
        _PREFIX_SHARING[0] = before


LOWER_CACHE_BYTES = 2 << 30  # the cached lower-layer inputs stop growing at 2 GiB


class LowerLayers:
    """The inputs of `decoder`'s layer `start` for each row seen so far (keyed by the row's
    tokens), for a decoder whose layers below `start` do not change while it is in use."""

    def __init__(self, decoder: nn.Module, start: int) -> None:
        self.decoder, self.start = decoder, start
        self.rows: dict[tuple[int, ...], torch.Tensor] = {}  # tokens -> [n_tokens, d_model]
        self.bytes = 0

    def inputs(self, batch: Batch) -> torch.Tensor:
        """[batch, seq, d_model]: layer `start`'s inputs at each row's tokens (zeros past them).
        Rows met for the first time are kept while the cache holds under `LOWER_CACHE_BYTES`."""
        lengths = batch.attention_mask.sum(-1).tolist()
        keys = [tuple(batch.input_ids[b, :n].tolist()) for b, n in enumerate(lengths)]
        missing = sorted({k: b for b, k in enumerate(keys) if k not in self.rows}.values())
        fresh: dict[tuple[int, ...], torch.Tensor] = {}
        if missing:
            sub = batch.select(missing)
            share = _PREFIX_SHARING[0] and len(missing) > 1
            with torch.no_grad(), _layer_range(self.decoder, 0, self.start):
                hidden = _hidden(self.decoder, sub, share, None)  # [m, w, d_model]
            for j, b in enumerate(missing):
                fresh[keys[b]] = row = hidden[j, : lengths[b]].clone()  # [n_b, d_model]
                size = row.numel() * row.element_size()
                if self.bytes + size <= LOWER_CACHE_BYTES:
                    self.rows[keys[b]] = row
                    self.bytes += size
        rows = [self.rows[k] if k in self.rows else fresh[k] for k in keys]  # [n_b, d_model]
        out = rows[0].new_zeros(len(rows), batch.input_ids.shape[1], rows[0].shape[-1])
        for b, row in enumerate(rows):
            out[b, : lengths[b]] = row
        return out

    def upper(self, **kwargs) -> torch.Tensor:
        """The decoder's layers from `start` up (and its final norm) on `inputs_embeds` that are
        layer `start`'s inputs -> last hidden states."""
        with _layer_range(self.decoder, self.start, len(self.decoder.layers)):
            return self.decoder(**kwargs).last_hidden_state


_LOWER: list[LowerLayers | None] = [None]  # set by `frozen_lower_layers`


def first_trainable_layer(decoder: nn.Module) -> int | None:
    """The lowest decoder layer holding a parameter that requires a gradient; 0 if the
    embeddings do, None if nothing does or the decoder keeps no `layers` list."""
    if any(p.requires_grad for p in decoder.get_input_embeddings().parameters()):
        return 0
    for i, layer in enumerate(getattr(decoder, "layers", [])):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return None


@contextmanager
def frozen_lower_layers(model: nn.Module) -> Iterator[None]:
    """Inside, `model`'s decoder passes run the layers below its lowest trainable one once per
    distinct row (module docstring); the parameters' trainability must not change inside.
    Nothing changes where there is nothing to skip or the layers are of several types."""
    decoder = causal_lm(model).get_decoder()
    start = first_trainable_layer(decoder)
    types = set(getattr(decoder.config, "layer_types", None) or [None])
    usable = (start is not None and start > 0 and len(types) == 1
              and hasattr(decoder, "norm")
              and all(hasattr(getattr(layer, "self_attn", None), "layer_idx")
                      for layer in decoder.layers))
    before = _LOWER[0]
    _LOWER[0] = LowerLayers(decoder, start) if usable else None
    try:
        yield
    finally:
        _LOWER[0] = before


@contextmanager
def _layer_range(decoder: nn.Module, lo: int, hi: int) -> Iterator[None]:
    """Inside, `decoder` runs only its layers lo..hi-1, their attention re-indexed from 0 (their
    keys and values fill a cache from its first layer), and its final norm only if hi is the
    top (else the last hidden state is layer hi's input)."""
    layers, norm = decoder.layers, decoder.norm
    chosen = list(layers)[lo:hi]
    indices = [layer.self_attn.layer_idx for layer in chosen]
    decoder.layers = nn.ModuleList(chosen)
    if hi < len(layers):
        decoder.norm = nn.Identity()
    for i, layer in enumerate(chosen):
        layer.self_attn.layer_idx = i
    try:
        yield
    finally:
        for layer, index in zip(chosen, indices, strict=True):
            layer.self_attn.layer_idx = index
        decoder.layers, decoder.norm = layers, norm


@contextmanager
def lower_layers_uncached() -> Iterator[None]:
    """Inside, decoder passes neither read nor fill the cache of `frozen_lower_layers`: for a
    one-off pass over rows that will not come again (a row's first visit costs more through
    the cache than without it); restored on exit."""
    before = _LOWER[0]
    _LOWER[0] = None
    try:
        yield
    finally:
        _LOWER[0] = before


def caches_lower_layers(model: nn.Module) -> bool:
    """Whether `model`'s decoder passes run inside `frozen_lower_layers` with a cache in use."""
    return _lower_for(causal_lm(model).get_decoder()) is not None


def _lower_for(decoder: nn.Module) -> LowerLayers | None:
    lower = _LOWER[0]
    return lower if lower is not None and lower.decoder is decoder else None


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


def common_prefix_length(rows: list[list[int]]) -> int:
    """Longest common prefix of the rows, leaving every row at least one token of its own."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1
    n = 0
    first = rows[0]
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return max(n, 0)


def prefix_groups(batch: Batch) -> tuple[list[int], list[int]]:
    """(prefix length per row, the row whose tokens hold it) for a right-padded batch.

    Every row starts with the batch's common prefix S (`shared_prefix_length`). Rows that share
    more than that (a ban's items: one list prompt, one row per banned title) can run their
    common prefix once. The rows are sorted, so rows that share a prefix are neighbours, and cut
    into runs of neighbours (dynamic programming) to run the fewest tokens: a run of several
    rows costs its common prefix once plus each row's tokens after it, and counts as a group
    only if that prefix reaches `MIN_SHARED_PREFIX` tokens past S (each row keeps one token of
    its own). A row alone is its own prefix (all its tokens but the last) or keeps S, whichever
    runs fewer token positions with the padding of both passes (`padded_tokens`): a long row of
    its own would pad every row's own part to its length. Rows with the same (prefix length,
    source row) run that prefix once.
    """
    n_rows = batch.input_ids.shape[0]
    shared = shared_prefix_length(batch)
    base = shared if shared >= MIN_SHARED_PREFIX else 0  # tokens every row gets for free
    lengths = batch.attention_mask.sum(-1).tolist()
    rows = [batch.input_ids[b, : lengths[b]].tolist() for b in range(n_rows)]
    order = sorted(range(n_rows), key=lambda b: rows[b])
    adjacent = [0] + [common_prefix_length([rows[a], rows[b]])
                      for a, b in zip(order, order[1:], strict=False)]  # with the previous row
    best = [0.0] + [math.inf] * n_rows  # best[j]: fewest tokens for order[:j]
    cut: list[tuple[int, int]] = [(0, 0)] * (n_rows + 1)  # (segment start, its prefix; 0 alone)
    for j in range(1, n_rows + 1):
        for i in range(j - 1, -1, -1):
            if j - i == 1:
                cost, length = lengths[order[i]] - base, 0
            else:
                length = min(adjacent[i + 1: j])
                if length - shared < MIN_SHARED_PREFIX:
                    break  # a longer run shares no more
                cost = length - base + sum(lengths[b] - length for b in order[i:j])
            if best[i] + cost < best[j]:
                best[j], cut[j] = best[i] + cost, (i, length)
    grouped: dict[int, tuple[int, int]] = {}  # row -> (prefix, source) of its group
    j = n_rows
    while j > 0:
        i, length = cut[j]
        if length:
            grouped.update({b: (length, order[i]) for b in order[i:j]})
        j = i
    layouts = [[grouped.get(b, (n - 1, b)) for b, n in enumerate(lengths)]]  # lone: own prefix
    if base:
        layouts.append([grouped.get(b, (shared, 0)) for b in range(n_rows)])  # lone: keep S
    best_layout = min(layouts, key=lambda rows_: padded_tokens(rows_, lengths))
    return [p for p, _ in best_layout], [src for _, src in best_layout]


def padded_tokens(layout: list[tuple[int, int]], lengths: list[int]) -> int:
    """Token positions the two passes of a (prefix, source) layout run, padding included:
    distinct prefixes x the longest, plus rows x the longest own part."""
    runs = set(layout)
    return (len(runs) * max(p for p, _ in layout)
            + len(lengths) * max(n - p for (p, _), n in zip(layout, lengths, strict=True)))


def decoder_hidden(decoder: nn.Module, batch: Batch, share_prefix: bool = True) -> torch.Tensor:
    """Last hidden states [batch, seq, d_model] of a right-padded batch: rows of very different
    lengths in groups of similar length (`length_buckets`), each group of rows' shared prefix
    run once (`prefix_groups`)."""
    n_rows = batch.input_ids.shape[0]
    # Gradient checkpointing turns the cache off in training: the rows would lose the prefix.
    checkpointing = decoder.training and getattr(decoder, "gradient_checkpointing", False)
    on = share_prefix and _PREFIX_SHARING[0] and not checkpointing and n_rows > 1
    return _hidden(decoder, batch, on, _lower_for(decoder))


def _hidden(decoder: nn.Module, batch: Batch, share: bool,
            lower: LowerLayers | None) -> torch.Tensor:
    """`decoder_hidden` with prefix sharing and length buckets if `share`, from `lower`'s
    cached inputs if given."""
    if not share:
        return _plain_hidden(decoder, batch, lower)
    whole = _grouped_layout(batch)
    plan = _bucket_plan(batch, whole)
    if plan is None:
        return _one_pass_hidden(decoder, batch, whole, lower)
    return _bucketed_hidden(decoder, batch, plan, lower)


Layout = tuple[list[int], list[int]]  # (prefix length per row, the row that holds it)


def _plain_hidden(decoder: nn.Module, batch: Batch,
                  lower: LowerLayers | None = None) -> torch.Tensor:
    if lower is not None:
        return lower.upper(inputs_embeds=lower.inputs(batch),
                           attention_mask=batch.attention_mask)
    return decoder(input_ids=batch.input_ids,
                   attention_mask=batch.attention_mask).last_hidden_state


def _grouped_layout(batch: Batch) -> Layout | None:
    """The (prefix, source) layout of the shared-prefix path, or None where the plain pass runs
    (one row, no prefix, or the prefixes save under a tenth of the positions)."""
    if batch.input_ids.shape[0] < 2:
        return None
    prefix, source = prefix_groups(batch)
    lengths = batch.attention_mask.sum(-1).tolist()
    layout = list(zip(prefix, source, strict=True))
    if (min(prefix) >= 1
            and padded_tokens(layout, lengths) <= SHARED_PATH_SHARE * batch.input_ids.numel()):
        return prefix, source
    return None


def _one_pass_tokens(batch: Batch, layout: Layout | None) -> int:
    """Token positions one pass runs on the batch with this layout, padding included."""
    if layout is None:
        return batch.input_ids.numel()
    return padded_tokens(list(zip(*layout, strict=True)), batch.attention_mask.sum(-1).tolist())


def _one_pass_hidden(decoder: nn.Module, batch: Batch, layout: Layout | None,
                     lower: LowerLayers | None = None) -> torch.Tensor:
    if layout is None:
        return _plain_hidden(decoder, batch, lower)
    return _grouped_hidden(decoder, batch, *layout, lower=lower)


def length_buckets(batch: Batch) -> list[list[int]] | None:
    """Rows cut into groups of similar length that run fewer token positions than one pass, or
    None where one pass is as cheap (within `BUCKET_SHARE`); see `_bucket_plan`."""
    plan = _bucket_plan(batch, _grouped_layout(batch))
    return None if plan is None else [rows for rows, _, _ in plan]


def _bucket_plan(batch: Batch, whole: Layout | None
                 ) -> list[tuple[list[int], Batch, Layout | None]] | None:
    """Per group of rows: (its rows, its sub-batch, its layout), or None where one pass with the
    whole batch's layout `whole` is as cheap (within `BUCKET_SHARE`).

    The rows are sorted by length and cut into runs (dynamic programming) that minimise the
    padded grid, each run costing its rows x its longest row plus `PASS_TOKENS`; the chosen cut
    is then costed with each group's own shared-prefix path against the whole batch's.
    """
    lengths = batch.attention_mask.sum(-1).tolist()
    n_rows = len(lengths)
    order = sorted(range(n_rows), key=lambda b: lengths[b])
    best = [0.0] + [math.inf] * n_rows  # best[j]: fewest positions for order[:j]
    start = [0] * (n_rows + 1)
    for j in range(1, n_rows + 1):
        for i in range(j):
            cost = best[i] + (j - i) * lengths[order[j - 1]] + PASS_TOKENS
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups: list[list[int]] = []
    j = n_rows
    while j > 0:
        groups.append(order[start[j]: j])
        j = start[j]
    if len(groups) < 2:
        return None
    plan = []
    for rows in groups[::-1]:
        sub = batch.select(rows)
        plan.append((rows, sub, _grouped_layout(sub)))
    split = sum(_one_pass_tokens(sub, layout) for _, sub, layout in plan)
    split += PASS_TOKENS * (len(plan) - 1)
    return plan if split <= BUCKET_SHARE * _one_pass_tokens(batch, whole) else None


def _bucketed_hidden(decoder: nn.Module, batch: Batch,
                     plan: list[tuple[list[int], Batch, Layout | None]],
                     lower: LowerLayers | None = None) -> torch.Tensor:
    """`decoder_hidden` group by group (`_bucket_plan`), the hidden states put back in the
    batch's row order [batch, seq, d_model] (zeros past each group's width)."""
    width = batch.input_ids.shape[1]
    parts, rows = [], []
    for group, sub, layout in plan:
        hidden = _one_pass_hidden(decoder, sub, layout, lower)  # [g, w_g, d_model]
        parts.append(nn.functional.pad(hidden, (0, 0, 0, width - hidden.shape[1])))
        rows.extend(group)
    inverse = torch.argsort(torch.tensor(rows, device=batch.input_ids.device))
    return torch.cat(parts)[inverse]  # [batch, seq, d_model]


def _grouped_hidden(decoder: nn.Module, batch: Batch, prefix: list[int],
                    source: list[int], lower: LowerLayers | None = None) -> torch.Tensor:
    """`decoder_hidden` through distinct prefixes: one pass over the prefixes (right-padded),
    their keys and values picked for each row, one pass over each row's own tokens after its
    prefix (positions go on from the prefix's end); gradients flow through the prefixes. With
    `lower`, both passes start at its layer from the cached inputs of the same positions."""
    from transformers import DynamicCache

    ids, mask = batch.input_ids, batch.attention_mask
    device = ids.device
    n_rows, width = ids.shape
    layout = list(zip(prefix, source, strict=True))
    runs = sorted(set(layout))  # distinct prefixes, run once each
    own_width = max(int(n) - p for n, p in zip(mask.sum(-1).tolist(), prefix, strict=True))
    p_width = max(p for p, _ in runs)
    run_of = {r: i for i, r in enumerate(runs)}
    row_run = torch.tensor([run_of[r] for r in layout], device=device)
    p_ids = torch.stack([ids[s, :p_width] for _, s in runs])  # [R, Pw]
    cols = torch.arange(p_width, device=device)[None]  # [1, Pw]
    p_mask = (cols < torch.tensor([p for p, _ in runs], device=device)[:, None]).long()  # [R, Pw]
    cache = DynamicCache()
    run = decoder if lower is None else lower.upper
    inputs = None if lower is None else lower.inputs(batch)  # [batch, seq, d_model]
    first = ({"input_ids": p_ids} if inputs is None
             else {"inputs_embeds": inputs[[s for _, s in runs], :p_width]})
    p_hidden = _last(run(**first, attention_mask=p_mask,
                         position_ids=cols.expand(len(runs), -1), cache=cache,
                         use_cache=True))  # [R, Pw, d_model]
    cache.batch_select_indices(row_run)
    starts = torch.tensor(prefix, device=device)  # [batch]
    own_cols = starts[:, None] + torch.arange(own_width, device=device)[None]  # [batch, Wo]
    inside = own_cols < width
    at = own_cols.clamp_max(width - 1)  # [batch, Wo]
    own_mask = torch.where(inside, mask.gather(1, at), 0)
    second = ({"input_ids": torch.where(inside, ids.gather(1, at), 0)} if inputs is None
              else {"inputs_embeds": inputs.gather(
                  1, at[..., None].expand(-1, -1, inputs.shape[-1]))})  # [batch, Wo, d_model]
    o_hidden = _last(run(**second, attention_mask=torch.cat([p_mask[row_run], own_mask], 1),
                         position_ids=own_cols, cache=cache,
                         use_cache=True))  # [batch, Wo, d_model]
    # Each (row, column) of the batch from the prefix pass (column < its prefix) or its own pass.
    d_model = p_hidden.shape[-1]
    source_rows = torch.cat([p_hidden.reshape(-1, d_model), o_hidden.reshape(-1, d_model)])
    col = torch.arange(width, device=device)[None]  # [1, seq]
    from_prefix = row_run[:, None] * p_width + col.clamp_max(p_width - 1)  # [batch, seq]
    from_own = (len(runs) * p_width + torch.arange(n_rows, device=device)[:, None] * own_width
                + (col - starts[:, None]).clamp(0, own_width - 1))
    index = torch.where(col < starts[:, None], from_prefix, from_own)  # [batch, seq]
    return source_rows[index.reshape(-1)].reshape(n_rows, width, d_model)


def _last(out) -> torch.Tensor:
    """The last hidden state of a decoder call (a model output, or `LowerLayers.upper`'s)."""
    return out if isinstance(out, torch.Tensor) else out.last_hidden_state


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
