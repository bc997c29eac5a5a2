"""Batched prefill with a shared prefix: the system prompt every chat probe repeats runs once.

Chat probes on a model like SmolLM2 start with the same template head (about 20 tokens of system
prompt), which is a third to a half of a typical evaluation context. `prefill` runs the longest
token prefix common to a batch once (batch 1), repeats its KV cache across the batch, and then
runs each row's own tokens left-padded *after* the prefix:

    row layout:  [shared prefix P][pad ... pad][own tokens]
    attention:   [1 ........... 1][0 ....... 0][1 ...... 1]
    positions:   0 ........... P-1  (unused)    P ........ P+len-1

Positions come from the attention mask (cumsum), so every row sees exactly the positions and
keys it would see alone; tests check that scores and greedy generations match the plain path.

The cache keeps spare room after the cached tokens (`SpareRoomLayer`): transformers'
`DynamicLayer` concatenates the whole cache with each new token, a large share of a decoding
step on CPU; writing into spare room copies only the new token's keys and values (timings:
`benchmarks/step_speed.py`, docs/results/).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from aglora.model.forward import causal_lm, common_prefix_length


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder stack and the output head (peft-wrapped or plain causal LM)."""
    lm = causal_lm(model)
    return lm.get_decoder(), lm.get_output_embeddings()


@functools.cache
def _spare_room_layer_class() -> type:
    """The layer class, defined on first use so that importing this module needs no
    transformers."""
    from transformers.cache_utils import DynamicLayer

    class SpareRoomLayer(DynamicLayer):
        """A DynamicLayer that appends into preallocated room instead of concatenating.

        `keys` / `values` are views [batch, heads, length, head_dim] of buffers with `SPARE`
        extra slots; the buffers grow (one copy) only when the room runs out.
        """

        SPARE = 32

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._k = self._v = None
                self._len = 0
            n_new = key_states.shape[-2]
            if self._k is None or self._len + n_new > self._k.shape[-2]:
                self._grow(key_states, value_states, self._len + n_new + self.SPARE)
            self._k[:, :, self._len: self._len + n_new] = key_states
            self._v[:, :, self._len: self._len + n_new] = value_states
            self._len += n_new
            self._views()
            return self.keys, self.values

        def _grow(self, like_k: torch.Tensor, like_v: torch.Tensor, capacity: int) -> None:
            b, h, _, d = like_k.shape
            k = like_k.new_empty((b, h, capacity, d))
            v = like_v.new_empty((b, h, capacity, like_v.shape[-1]))
            if self._len:
                k[:, :, : self._len] = self._k[:, :, : self._len]
                v[:, :, : self._len] = self._v[:, :, : self._len]
            self._k, self._v = k, v

        def _views(self) -> None:
            self.keys = self._k[:, :, : self._len]
            self.values = self._v[:, :, : self._len]

        def get_seq_length(self) -> int:
            return self._len if self.is_initialized else 0

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            if self.is_initialized and self._k is not None:
                self._len = self.keys.shape[-2]
                self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.get_seq_length() > 0:
                self._k, self._v = self._k[indices], self._v[indices]
                self._views()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx)

    return SpareRoomLayer


def new_cache():
    """An empty transformers DynamicCache whose layers append into spare room."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = _spare_room_layer_class()
    return cache


@dataclass
class Prefilled:
    cache: object                # transformers DynamicCache holding [prefix + padded own tokens]
    attention_mask: torch.Tensor  # [batch, P + width] 1 on real tokens
    last_hidden: torch.Tensor    # [batch, hidden] decoder output at each row's last token

    @property
    def next_positions(self) -> torch.Tensor:
        """[batch] the position id of the token that comes next in each row."""
        return self.attention_mask.sum(-1)


@torch.no_grad()
def prefill(model: nn.Module, rows: list[list[int]], pad_id: int) -> Prefilled:
    """Run the rows (token ids, each non-empty) through the decoder, sharing their prefix."""
    decoder, _ = decoder_and_head(model)
    device = next(model.parameters()).device
    n_rows = len(rows)
    shared = common_prefix_length(rows)
    cache = new_cache()
    if shared:
        prefix = torch.tensor([rows[0][:shared]], device=device)  # [1, P]
        decoder(input_ids=prefix, position_ids=torch.arange(shared, device=device)[None],
                cache=cache, use_cache=True)
        cache.batch_repeat_interleave(n_rows)
    own = [r[shared:] for r in rows]
    width = max(len(r) for r in own)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    own_mask = torch.zeros((n_rows, width), dtype=torch.long)
    for b, r in enumerate(own):  # left padding: every row ends at column width-1
        ids[b, width - len(r):] = torch.tensor(r)
        own_mask[b, width - len(r):] = 1
    mask = torch.cat([torch.ones((n_rows, shared), dtype=torch.long), own_mask], 1).to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, shared:]  # [batch, width]
    out = decoder(input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
                  cache=cache, use_cache=True)
    return Prefilled(cache, mask, out.last_hidden_state[:, -1])
