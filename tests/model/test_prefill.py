"""Shared-prefix prefill and its KV cache (aglora.model.prefill) agree with the plain paths."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.model.decode import generation_context
from aglora.model.prefill import common_prefix_length, prefill
from aglora.model.tokens import context_ids
from tests.tiny import FORGET, RETAIN


@pytest.mark.parametrize(("rows", "expected"), [
    ([[1, 2, 3], [1, 2, 4]], 2),
    ([[1, 2], [1, 2, 3]], 1),          # every row keeps one token of its own
    ([[1, 2, 3]], 2),
    ([[5], [5, 6]], 0),
    ([[1, 2, 3], [9, 2, 3]], 0),
    ([], 0),
])
def test_common_prefix_length(rows, expected):
    assert common_prefix_length(rows) == expected


def test_prefill_last_hidden_matches_plain_forward(model, tok):
    probes = [Probe(**r) for r in FORGET + RETAIN]
    rows = [context_ids(tok, p, generation_context(tok, p)) for p in probes]
    assert common_prefix_length(rows) > 3  # the template head is shared and really skipped
    filled = prefill(model, rows, tok.pad_token_id)
    with torch.no_grad():
        for b, ids in enumerate(rows):
            plain = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            torch.testing.assert_close(filled.last_hidden[b], plain, atol=1e-5, rtol=1e-5)
    assert filled.next_positions.tolist() == [len(r) for r in rows]


def test_spare_room_cache_layer_matches_dynamic_layer():
    """Appends (some past the spare room), repeats and row selections give the same keys."""
    from transformers.cache_utils import DynamicLayer

    from aglora.model.prefill import new_cache
    torch.manual_seed(0)
    ours = new_cache()
    ref = DynamicLayer()

    def kv(batch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(batch, 2, n, 4), torch.randn(batch, 2, n, 4)

    def step(k: torch.Tensor, v: torch.Tensor) -> None:
        got = ours.update(k, v, 0)
        want = ref.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])

    step(*kv(1, 5))
    ours.batch_repeat_interleave(3)
    ref.batch_repeat_interleave(3)
    step(*kv(3, 40))                       # more than the spare room: the buffers grow
    for _ in range(40):                    # one token at a time, growing once more
        step(*kv(3, 1))
    keep = torch.tensor([2, 0])
    ours.batch_select_indices(keep)
    ref.batch_select_indices(keep)
    step(*kv(2, 1))
    assert ours.get_seq_length(0) == ref.get_seq_length() == 86
    assert type(ours.layers[0]).__name__ == "SpareRoomLayer"
