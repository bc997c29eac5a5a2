"""Our decoding loop (aglora.model.decode) agrees with transformers' generate;
sampling is seeded."""

from __future__ import annotations

import torch

from aglora.concepts import Probe
from aglora.model.decode import _stop_ids, generate, generation_context
from aglora.model.tokens import context_ids
from tests.tiny import FORGET, RETAIN


def _probes() -> list[Probe]:
    chat = [Probe(**r) for r in FORGET + RETAIN]
    completion = [Probe(prompt="The capital of Japan is", format="completion"),
                  Probe(prompt="A film about dreams", format="completion")]
    return chat + completion


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


def test_generation_is_seeded_and_greedy_first(model, tok):
    probes = [Probe(**r) for r in FORGET]
    a = generate(model, tok, probes, n_samples=2, max_new_tokens=6, seed=7)
    b = generate(model, tok, probes, n_samples=2, max_new_tokens=6, seed=7)
    assert a == b and all(len(g) == 3 for g in a)
    greedy_only = generate(model, tok, probes, n_samples=0, max_new_tokens=6)
    assert [g[0] for g in a] == [g[0] for g in greedy_only]


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
