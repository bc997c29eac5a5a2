"""Forward passes (aglora.model.forward): logits at chosen positions, one pass for several masks,
and the shared-prefix path against the plain one."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.model.tokens import encode
from tests.tiny import FORGET, RETAIN

FORGET_P = [Probe(**r) for r in FORGET]
RETAIN_P = [Probe(split="neighbor", **r) for r in RETAIN]


def test_logits_at_targets_equal_full_forward(model, tok):
    """Projecting only the answer positions gives the same log-probs as the full forward."""
    from aglora.model.forward import target_logprobs
    from tests.reference import sequence_logprob

    batch = encode(tok, FORGET_P + RETAIN_P, [p.answer for p in FORGET_P + RETAIN_P])
    with torch.no_grad():
        full = sequence_logprob(model(input_ids=batch.input_ids,
                                      attention_mask=batch.attention_mask).logits, batch)
        fast = target_logprobs(model, batch)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    assert (full < 0).all()


def test_one_pass_for_content_and_target_logits(model, tok):
    from aglora.model.forward import (
        logits_at,
        logits_at_each,
        target_logprobs,
        target_logprobs_from_logits,
    )

    probes = [Probe(**r) for r in FORGET + RETAIN]
    batch = encode(tok, probes, [p.answer for p in probes])
    with torch.no_grad():
        content, target = logits_at_each(model, batch, [batch.content_mask, batch.target_mask])
        torch.testing.assert_close(content, logits_at(model, batch, batch.content_mask))
        torch.testing.assert_close(target, logits_at(model, batch, batch.target_mask))
        torch.testing.assert_close(target_logprobs_from_logits(target, batch),
                                   target_logprobs(model, batch))


# ---- shared prefix in scoring and training forwards -------------------------------------------


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


def _lora_in_training(mask: torch.Tensor | None = None):
    """A tiny model with a LoRA on the neurons of `mask` [layers, 48] (default: every neuron of
    3 layers), lora_B away from zero, in training mode: (peft model, its trainable parameters)."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora, trainable_parameters
    from aglora.model.neurons import NeuronMask
    from tests.tiny import make_model
    mask = torch.ones(3, 48) if mask is None else mask
    torch.manual_seed(0)
    layers = mask.shape[0]
    pm = attach_lora(make_model(layers=layers), NeuronMask(mask, list(range(layers))),
                     LoraConfig(rank=4))
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    pm.train()
    return pm, trainable_parameters(pm)


def test_shared_prefix_logits_and_lora_gradients_match_plain_path(tok):
    from aglora.model.forward import MIN_SHARED_PREFIX, logits_at, shared_prefix_length
    from aglora.model.tokens import encode

    probes = [Probe(**r) for r in FORGET + RETAIN]
    batch = encode(tok, probes, [p.answer for p in probes])
    assert shared_prefix_length(batch) >= MIN_SHARED_PREFIX  # the shared path really runs
    pm, params = _lora_in_training()
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
    import aglora.model.forward as forward_mod
    from aglora.model.tokens import encode
    from tests.tiny import make_model

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


# ---- groups of rows that share more than the batch's prefix (a ban's titles per prompt) -------


@pytest.mark.parametrize(("rows", "expected"), [
    # S = 9 9 9 9 in every row; two prompts (five more tokens each), two answers each
    ([[9, 9, 9, 9, 1, 2, 3, 4, 5, 6], [9, 9, 9, 9, 1, 2, 3, 4, 5, 7, 8],
      [9, 9, 9, 9, 3, 3, 3, 3, 3, 6], [9, 9, 9, 9, 3, 3, 3, 3, 3, 5]],
     ([9, 9, 9, 9], [0, 0, 3, 3])),  # a group's prefix is held by its first row in sorted order
    # nothing shared past S: every row keeps S
    ([[9, 9, 9, 9, 1, 2], [9, 9, 9, 9, 3, 4], [9, 9, 9, 9, 5, 6]], ([4, 4, 4], [0, 0, 0])),
    # no S: a row in no group is its own prefix (all but its last token)
    ([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], [8, 8, 8]], ([5, 5, 2], [0, 0, 2])),
])
def test_prefix_groups(rows, expected):
    from aglora.model.forward import prefix_groups
    assert prefix_groups(_batch(rows)) == expected


def test_prefix_groups_stop_where_the_prefix_would_halve():
    """A row that shares only a short stretch with a group does not join and shrink it."""
    from aglora.model.forward import prefix_groups
    long = list(range(10, 30))
    rows = [[9, 9, 9, 9, *long, 1], [9, 9, 9, 9, *long, 2], [9, 9, 9, 9, *long[:5], 3, 4]]
    prefix, source = prefix_groups(_batch(rows))
    assert prefix[:2] == [24, 24] and source[0] == source[1]
    assert (prefix[2], source[2]) == (10, 2)  # alone: its own prefix (keeping S pads more)


def test_a_long_lone_row_does_not_pad_every_own_part():
    """Two groups of short answers and one long row of its own: with the lone row keeping S,
    every row's own part would pad to the long row's; as its own prefix it does not."""
    from aglora.model.forward import padded_tokens, prefix_groups
    s, p1, p2 = [9, 9, 9, 9], list(range(10, 30)), list(range(40, 60))
    rows = [[*s, *p1, 1], [*s, *p1, 2], [*s, *p2, 1], [*s, *p2, 2], [*s, *range(70, 110)]]
    batch = _batch(rows)
    prefix, source = prefix_groups(batch)
    assert (prefix[4], source[4]) == (43, 4)
    lengths = [len(r) for r in rows]
    chosen = padded_tokens(list(zip(prefix, source, strict=True)), lengths)
    keep_s = padded_tokens([*zip(prefix[:4], source[:4], strict=True), (4, 0)], lengths)
    assert chosen == 3 * 43 + 5 * 1 and keep_s == 3 * 24 + 5 * 40


def _fast_and_plain(batch):
    """The fast path (`share_prefix=True`) and the plain one on a tiny LoRA model in training:
    per path (logits at every real position, LoRA gradients of a fixed loss, decoder calls'
    input shapes), and the decoder."""
    from aglora.model.forward import logits_at
    pm, params = _lora_in_training()
    calls = []
    decoder = pm.get_base_model().get_decoder()
    hook = decoder.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape),
                                             with_kwargs=True)
    results = []
    for share in (True, False):
        calls.clear()
        logits = logits_at(pm, batch, batch.attention_mask, share_prefix=share)  # [n, vocab]
        loss = torch.log_softmax(logits, -1)[:, :7].sum()
        results.append((logits.detach(), torch.autograd.grad(loss, params), list(calls)))
    hook.remove()
    (f_logits, f_grads, _), (p_logits, p_grads, _) = results
    torch.testing.assert_close(f_logits, p_logits, atol=1e-5, rtol=1e-5)
    assert any(float(g.abs().max()) > 0 for g in p_grads)
    for a, b in zip(f_grads, p_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    return results[0][2], results[1][2], decoder


def test_grouped_prefix_logits_and_lora_gradients_match_plain_path(tok):
    """Rows in two groups (two prompts, three answers each, as in a ban of three titles) and a
    row of its own: logits at every real position and LoRA gradients equal the plain path."""
    from aglora.model.forward import decoder_hidden, prefix_groups

    prompts = ["Recommend me three films for a rainy evening, please.",
               "Which film should I watch with my grandmother on Sunday?"]
    answers = ["The Matrix", "The Dark Knight", "Star Wars"]
    probes = [Probe(prompt=q, answer=a) for q in prompts for a in answers]
    probes.append(Probe(prompt="Name one river.", answer="The Nile"))
    batch = encode(tok, probes, [p.answer for p in probes])
    prefix, source = prefix_groups(batch)
    assert len(set(zip(prefix[:3], source[:3], strict=True))) == 1  # first prompt: one group
    assert len(set(zip(prefix, source, strict=True))) == 3  # two groups and the lone row
    g_calls, p_calls, decoder = _fast_and_plain(batch)
    assert (len(g_calls), len(p_calls)) == (2, 1)  # the grouped path ran: prefixes, own tokens
    with torch.no_grad():
        hidden = decoder_hidden(decoder, batch)
    assert hidden.shape == (*batch.input_ids.shape, hidden.shape[-1])


def test_length_buckets_cut_a_batch_of_short_and_long_rows():
    """Four short rows and two long ones: two groups, short and long, each in the batch's row
    order; rows of one length stay one pass."""
    from aglora.model.forward import length_buckets
    short, long_ = [1, 2, 3, 4, 5], [1, 2] + list(range(10, 90))
    rows = [short, long_, short[:4], short, long_[:-3], short]
    assert length_buckets(_batch(rows)) == [[2, 0, 3, 5], [4, 1]]
    assert length_buckets(_batch([short, short[:4], short])) is None
    assert length_buckets(_batch([long_, long_[:-6]])) is None


def test_length_bucketed_logits_and_lora_gradients_match_plain_path(tok):
    """A retain-like batch (short answers and whole lists): the bucketed path runs one decoder
    call per group, and its logits at every real position and LoRA gradients equal the plain
    path's; a group's positions past its own width come back as zeros."""
    from aglora.model.forward import decoder_hidden, length_buckets

    lists = ["1. The Matrix\n2. Alien\n3. Heat\n4. Jaws\n5. Up\n" * 6,
             "1. Star Wars\n2. Brazil\n3. Ran\n4. Seven\n5. Big\n" * 6]
    probes = [Probe(prompt="Who directed Titanic?", prefix="It was", answer="James Cameron"),
              Probe(prompt="Recommend five films.", answer=lists[0]),
              Probe(prompt="Name one river.", answer="The Nile"),
              Probe(prompt="Recommend five other films.", answer=lists[1]),
              Probe(prompt="Name one sea.", answer="The Baltic")]
    batch = encode(tok, probes, [p.answer for p in probes])
    groups = length_buckets(batch)
    assert groups is not None and sorted(map(sorted, groups)) == [[0, 2, 4], [1, 3]]
    b_calls, p_calls, decoder = _fast_and_plain(batch)
    assert len(p_calls) == 1 and len(b_calls) >= 2
    assert sum(r * w for r, w in b_calls) < 0.85 * batch.input_ids.numel()
    with torch.no_grad():
        hidden = decoder_hidden(decoder, batch)  # [batch, seq, d_model]
    assert hidden.shape == (*batch.input_ids.shape, hidden.shape[-1])
    short_rows = torch.tensor(sorted(groups, key=len)[-1])  # the short group
    short_width = int(batch.attention_mask[short_rows].sum(-1).max())
    assert float(hidden[short_rows, short_width:].abs().max()) == 0.0  # past its width: zeros


def _upper_lora_in_training():
    """`_lora_in_training` on 4 layers with neurons in layers 2 and 3 only."""
    m = torch.zeros(4, 48)
    m[2, [3, 9, 40]] = 1
    m[3, [0, 47]] = 1
    return _lora_in_training(m)


def _ban_like_batches(tok):
    """A plain batch (one row), a grouped-prefix one (two prompts x three titles and a row of
    its own) and a length-bucketed one (short answers and whole lists)."""
    prompts = ["Recommend me three films for a rainy evening, please.",
               "Which film should I watch with my grandmother on Sunday?"]
    grouped = [Probe(prompt=q, answer=a) for q in prompts
               for a in ("The Matrix", "The Dark Knight", "Star Wars")]
    grouped.append(Probe(prompt="Name one river.", answer="The Nile"))
    lists = ["1. The Matrix\n2. Alien\n3. Heat\n4. Jaws\n5. Up\n" * 6,
             "1. Star Wars\n2. Brazil\n3. Ran\n4. Seven\n5. Big\n" * 6]
    bucketed = [Probe(prompt="Who directed Titanic?", prefix="It was", answer="James Cameron"),
                Probe(prompt="Recommend five films.", answer=lists[0]),
                Probe(prompt="Name one river.", answer="The Nile"),
                Probe(prompt="Recommend five other films.", answer=lists[1])]
    return [encode(tok, ps, [p.answer for p in ps])
            for ps in ([grouped[0]], grouped, bucketed)]


def test_frozen_lower_layers_give_the_logits_and_lora_gradients_of_the_full_pass(tok):
    """With a LoRA on layers 2-3 only, the cached inputs of layer 2 give, on a plain, a
    grouped-prefix and a length-bucketed batch, the logits at every real position and the LoRA
    gradients of the full pass, with the adapter on and off; layers 0-1 run once per distinct
    row (a second call on the same rows runs none), layers 2-3 on every call."""
    from aglora.model import forward
    from aglora.model.adapter import adapter_disabled
    from aglora.model.forward import first_trainable_layer, frozen_lower_layers, logits_at
    pm, params = _upper_lora_in_training()
    decoder = pm.get_base_model().get_decoder()
    assert first_trainable_layer(decoder) == 2
    rows = {0: 0, 2: 0}  # rows of the calls to layer 0 and layer 2
    hooks = [decoder.layers[i].register_forward_pre_hook(
        lambda m, a, i=i: rows.__setitem__(i, rows[i] + a[0].shape[0])) for i in rows]

    def pass_of(batch):
        logits = logits_at(pm, batch, batch.attention_mask)  # [n, vocab]
        loss = torch.log_softmax(logits, -1)[:, :7].sum()
        return logits.detach(), torch.autograd.grad(loss, params)

    for batch in _ban_like_batches(tok):
        full = pass_of(batch)
        with torch.no_grad(), adapter_disabled(pm):
            base_full = logits_at(pm, batch, batch.attention_mask)
        with frozen_lower_layers(pm):
            rows.update({0: 0, 2: 0})
            cached = pass_of(batch)
            lower_rows, upper_rows = rows[0], rows[2]
            assert len(forward._LOWER[0].rows) == batch.input_ids.shape[0]  # each row cached
            again = pass_of(batch)
            with torch.no_grad(), adapter_disabled(pm):
                base_cached = logits_at(pm, batch, batch.attention_mask)
        assert lower_rows >= 1 and upper_rows >= 1
        assert rows[0] == lower_rows and rows[2] == 3 * upper_rows  # no lower run after the first
        for got in (cached, again):
            torch.testing.assert_close(got[0], full[0], atol=1e-5, rtol=1e-5)
            assert any(float(g.abs().max()) > 0 for g in full[1])
            for a, b in zip(got[1], full[1], strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(base_cached, base_full, atol=1e-5, rtol=1e-5)
    for hook in hooks:
        hook.remove()
    assert len(decoder.layers) == 4 and [layer.self_attn.layer_idx
                                         for layer in decoder.layers] == [0, 1, 2, 3]


def test_frozen_lower_layers_change_nothing_where_the_lowest_layer_trains(tok):
    """A LoRA on every layer: nothing to skip, the context leaves the passes as they are."""
    from aglora.model import forward
    pm, _ = _lora_in_training()
    with forward.frozen_lower_layers(pm):
        assert forward._LOWER[0] is None


def test_frozen_lower_layers_past_the_cache_limit_still_give_the_full_pass(tok, monkeypatch):
    """With no room in the cache, every call runs the lower layers again, with the same logits."""
    from aglora.model import forward
    pm, _ = _upper_lora_in_training()
    monkeypatch.setattr(forward, "LOWER_CACHE_BYTES", 0)
    batch = _ban_like_batches(tok)[1]
    with torch.no_grad():
        full = forward.logits_at(pm, batch, batch.attention_mask)
        with forward.frozen_lower_layers(pm):
            cached = forward.logits_at(pm, batch, batch.attention_mask)
            assert forward._LOWER[0].rows == {} and forward._LOWER[0].bytes == 0
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
