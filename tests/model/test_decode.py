"""Shared-prefix prefill and our decoding loop agree with the plain paths they replace."""

from __future__ import annotations

import pytest
import torch
from conftest import FORGET, RETAIN

from aglora.concepts import Probe
from aglora.model.decode import _stop_ids, generate, generation_context
from aglora.model.prefill import common_prefix_length, prefill
from aglora.model.tokens import context_ids


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


def _probes() -> list[Probe]:
    chat = [Probe(**r) for r in FORGET + RETAIN]
    completion = [Probe(prompt="The capital of Japan is", format="completion"),
                  Probe(prompt="A film about dreams", format="completion")]
    return chat + completion


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


def test_greedy_matches_transformers_generate(model, tok):
    probes = _probes()
    ours = generate(model, tok, probes, n_samples=0, max_new_tokens=8, batch_size=4)
    stop = _stop_ids(model, tok)
    for probe, got in zip(probes, ours, strict=True):
        ids = torch.tensor([context_ids(tok, probe, generation_context(tok, probe))])
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 do_sample=False, max_new_tokens=8, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id)
        expected = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert got == [expected]


def test_blocklist_matches_transformers_bad_words_ids(model, tok):
    """Decode-time blocking: a blocked sequence's last token is taken out where the rest of the
    sequence ends the row, as transformers' `bad_words_ids` does (greedy outputs equal)."""
    from aglora.model.decode import blocked_tokens

    assert blocked_tokens([1, 2, 3], [[3, 4], [2, 4], [7]]) == [4, 7]
    assert blocked_tokens([], [[5, 6], [8]]) == [8]
    probes = _probes()
    stop = _stop_ids(model, tok)

    def reference(probe, bad=None):
        ids = torch.tensor([context_ids(tok, probe, generation_context(tok, probe))])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 do_sample=False, max_new_tokens=8, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id, bad_words_ids=bad)
        return out[0, ids.shape[1]:].tolist()

    first, second = reference(probes[0]), reference(probes[1])
    blocked = [first[:2], second[:1]]  # a two-token sequence and a one-token one
    ours = generate(model, tok, probes, n_samples=0, max_new_tokens=8, batch_size=4,
                    blocked=blocked)
    free = generate(model, tok, probes, n_samples=0, max_new_tokens=8, batch_size=4)
    assert ours[0] != free[0] and ours[1] != free[1]  # the blocks bite
    for probe, got in zip(probes, ours, strict=True):
        expected = tok.decode(reference(probe, blocked), skip_special_tokens=True).strip()
        assert got == [expected]
    # sampled rows are blocked too: no sample starts with the blocked first token
    from aglora.model.decode import _generate_rows
    row = context_ids(tok, probes[1], generation_context(tok, probes[1]))
    gen = torch.Generator().manual_seed(3)
    free_ids = _generate_rows(model, [row], 40, 50.0, 1, stop, tok.pad_token_id, gen)[0]
    assert any(ids[:1] == second[:1] for ids in free_ids)  # unblocked: the greedy row at least
    gen = torch.Generator().manual_seed(3)
    ids = _generate_rows(model, [row], 40, 50.0, 1, stop, tok.pad_token_id, gen, [second[:1]])[0]
    assert len(ids) == 41 and not any(i[:1] == second[:1] for i in ids)


def test_samples_are_seeded_and_depend_on_the_seed(model, tok):
    probes = _probes()
    a = generate(model, tok, probes, n_samples=3, temperature=5.0, max_new_tokens=8, seed=1,
                 batch_size=8)
    b = generate(model, tok, probes, n_samples=3, temperature=5.0, max_new_tokens=8, seed=1,
                 batch_size=8)
    c = generate(model, tok, probes, n_samples=3, temperature=5.0, max_new_tokens=8, seed=2,
                 batch_size=8)
    assert a == b
    assert all(len(g) == 4 for g in a)
    assert [g[1:] for g in a] != [g[1:] for g in c]
    greedy = generate(model, tok, probes, n_samples=0, max_new_tokens=8)
    assert [g[0] for g in a] == [g[0] for g in greedy]  # greedy row unaffected by sampling


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(model, tok):
    from aglora.model.decode import _generate_rows

    probes = _probes()
    rows = [context_ids(tok, p, generation_context(tok, p)) for p in probes]
    gen = torch.Generator().manual_seed(0)
    free = _generate_rows(model, rows, 0, 1.0, 8, [], tok.pad_token_id, gen)
    stop = free[0][0][2]  # a token the first prompt emits third: it now ends that row early
    stopped = _generate_rows(model, rows, 0, 1.0, 8, [stop], tok.pad_token_id, gen)
    assert stopped[0][0] == free[0][0][:2]
    assert any(len(s[0]) == 8 for s in stopped)  # some rows ran on after others finished
    for ids, got in zip(rows, stopped, strict=True):
        x = torch.tensor([ids])
        with torch.no_grad():
            ref = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=8, eos_token_id=[stop],
                                 pad_token_id=tok.pad_token_id)[0, x.shape[1]:].tolist()
        assert got[0] == ref[: ref.index(stop)] if stop in ref else got[0] == ref


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


def test_inverse_cdf_sampling_follows_the_tempered_distribution():
    from aglora.model.decode import sample
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.2, 0.3, 0.5, 0.0])
    logits = torch.log(p).repeat(20000, 1)                  # [rows, vocab]
    draws = sample(logits, 1.0, gen)
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    assert torch.allclose(freq, p.double(), atol=0.015)
    assert int(freq[3]) == 0                                 # zero mass is never drawn
    # Temperature 0.5 squares the probabilities before normalising.
    freq = torch.bincount(sample(logits, 0.5, gen), minlength=4).double() / len(draws)
    assert torch.allclose(freq, (p**2 / (p**2).sum()).double(), atol=0.015)
    # Same seed, same draws.
    a = sample(logits[:50], 1.0, torch.Generator().manual_seed(3))
    b = sample(logits[:50], 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ---- shared prefix in scoring and training forwards (aglora.forward) ----------------------

def _batch(rows: list[list[int]]):
    from aglora.model.tokens import Batch
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return Batch(ids, mask, mask.float(), mask.float())


@pytest.mark.parametrize(("rows", "expected"), [
    ([[1, 2, 3, 4], [1, 2, 3, 5, 6]], 3),
    ([[1, 2, 3], [1, 2, 3, 4]], 2),    # every row keeps one token of its own
    ([[1, 2, 3]], 0),                  # one row: nothing to share
    ([[7, 2], [1, 2]], 0),
])
def test_shared_prefix_length(rows, expected):
    from aglora.model.forward import shared_prefix_length
    assert shared_prefix_length(_batch(rows)) == expected


def test_shared_prefix_logits_and_lora_gradients_match_plain_path(tok):
    from tiny import make_model

    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora, trainable_parameters
    from aglora.model.forward import MIN_SHARED_PREFIX, logits_at, shared_prefix_length
    from aglora.model.neurons import NeuronMask
    from aglora.model.tokens import encode

    probes = [Probe(**r) for r in FORGET + RETAIN]
    batch = encode(tok, probes, [p.answer for p in probes])
    assert shared_prefix_length(batch) >= MIN_SHARED_PREFIX  # the shared path really runs
    torch.manual_seed(0)
    mask = NeuronMask(torch.ones(3, 48), [0, 1, 2])
    pm = attach_lora(make_model(), mask, LoraConfig(rank=4))
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    params = trainable_parameters(pm)
    pm.train()
    results = []
    for share in (True, False):
        logits = logits_at(pm, batch, batch.content_mask, share_prefix=share)  # [n, vocab]
        loss = torch.log_softmax(logits, -1)[:, :7].sum()
        grads = torch.autograd.grad(loss, params)
        results.append((logits.detach(), grads))
    (shared_logits, shared_grads), (plain_logits, plain_grads) = results
    torch.testing.assert_close(shared_logits, plain_logits, atol=1e-5, rtol=1e-5)
    assert any(float(g.abs().max()) > 0 for g in plain_grads)
    for a, b in zip(shared_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # every real position, the shared prefix's own included
        every = [logits_at(pm, batch, batch.attention_mask, share_prefix=s) for s in (True, False)]
    torch.testing.assert_close(every[0], every[1], atol=1e-5, rtol=1e-5)


def test_no_shared_prefix_under_gradient_checkpointing(tok, monkeypatch):
    """Checkpointing turns the KV cache off in training, so the plain forward must be used."""
    from tiny import make_model

    import aglora.model.forward as forward_mod
    from aglora.model.tokens import encode

    def must_not_run(batch):
        raise AssertionError("the shared-prefix path ran under gradient checkpointing")

    probes = [Probe(**r) for r in FORGET + RETAIN]
    batch = encode(tok, probes, [p.answer for p in probes])
    decoder = make_model().get_decoder()
    decoder.train()
    decoder.gradient_checkpointing = True
    monkeypatch.setattr(forward_mod, "shared_prefix_length", must_not_run)
    hidden = forward_mod.decoder_hidden(decoder, batch)
    assert hidden.shape[:2] == batch.input_ids.shape
