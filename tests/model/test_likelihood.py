"""Likelihood choice (aglora.model.likelihood): KV-shared option scoring equals the one-sequence-
per-option reference, and probes with one context share its run."""

from __future__ import annotations

import torch

from aglora.concepts import Probe
from tests.tiny import FORGET, RETAIN

FORGET_P = [Probe(**r) for r in FORGET]
RETAIN_P = [Probe(split="neighbor", **r) for r in RETAIN]


def test_kv_shared_option_scoring_matches_reference(model, tok):
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.model.likelihood import score_options
    from tests.reference import score_options_reference

    probes = FORGET_P + RETAIN_P + [
        Probe(prompt="The capital of Japan is", format="completion", answer="Tokyo",
              distractors=["Paris", "Rome"]),
        Probe(prompt="no choice here")]
    fast = score_options(model, tok, probes, batch_size=8)
    ref = score_options_reference(model, tok, probes)
    assert fast[-1] == [] and ref[-1] == []
    for f, r in zip(fast, ref, strict=True):
        assert len(f) == len(r)
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)
    # Same with a LoRA-wrapped model (the path used after training).
    pm = attach_lora(model, None, LoraConfig(masked=False, all_layers=True))
    for p in pm.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    fast = score_options(pm, tok, probes, batch_size=4)
    ref = score_options_reference(pm, tok, probes)
    for f, r in zip(fast, ref, strict=True):
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)


def test_probes_with_one_context_share_its_run_and_match_reference(model, tok, monkeypatch):
    """A ban's items (one prompt, one item per banned title) run their context once."""
    import aglora.model.likelihood as lik

    same = [Probe(prompt="Recommend a film.", prefix="1.", answer=a, distractors=d)
            for a, d in [("Star Wars", ["Alien", "Heat", "Jaws"]),
                         ("The Shining", ["Up", "Big"]), ("Rocky", ["Cars", "Fargo", "Se7en"])]]
    other = Probe(prompt="Name a sci-fi film.", prefix="1.", answer="Alien",
                  distractors=["Heat", "Up"])
    probes = [same[0], other, same[1], same[2]]
    rows_run: list[int] = []
    real_prefill = lik.prefill

    def counting_prefill(model, rows, pad):
        rows_run.append(len(rows))
        return real_prefill(model, rows, pad)

    monkeypatch.setattr(lik, "prefill", counting_prefill)
    fast = lik.score_options(model, tok, probes, batch_size=16)
    assert rows_run == [2]  # 4 probes, 2 distinct contexts, one chunk
    from tests.reference import score_options_reference
    ref = score_options_reference(model, tok, probes)
    for f, r in zip(fast, ref, strict=True):
        assert len(f) == len(r)
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)
    # A chunk holds at most batch_size // 4 distinct contexts: here 1, so 2 chunks.
    rows_run.clear()
    again = lik.score_options(model, tok, probes, batch_size=4)
    assert rows_run == [1, 1]
    for f, r in zip(again, ref, strict=True):
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)


def test_an_option_shared_by_probes_of_one_context_is_scored_once(model, tok, monkeypatch):
    """A ban's items on one prompt share their distractors: each (context, option) row runs once,
    and every probe still gets the reference scores."""
    import aglora.model.likelihood as lik
    from tests.reference import score_options_reference

    shared = ["Alien", "Heat", "Jaws"]
    probes = [Probe(prompt="Recommend a film.", prefix="1.", answer=a, distractors=shared)
              for a in ["Star Wars", "The Shining", "Rocky"]]
    option_rows: list[int] = []
    real_decoder_and_head = lik.decoder_and_head

    def counting(model):
        decoder, head = real_decoder_and_head(model)

        def run(**kwargs):
            option_rows.append(kwargs["input_ids"].shape[0])
            return decoder(**kwargs)
        return run, head

    monkeypatch.setattr(lik, "decoder_and_head", counting)
    fast = lik.score_options(model, tok, probes, batch_size=16)
    assert option_rows == [3 + 3]  # three answers, the three shared distractors once
    ref = score_options_reference(model, tok, probes)
    for f, r in zip(fast, ref, strict=True):
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)


def test_inside_frozen_lower_layers_options_are_scored_as_rows_through_the_cache(tok):
    """During training (a LoRA on layers 2-3 of 4, inside `frozen_lower_layers`) the options
    are scored as context+option rows: the reference's scores on probes that share contexts and
    options, a row's lower layers run on its first visit only, and the KV path stays untouched
    outside."""
    from aglora.config import LoraConfig
    from aglora.model import forward
    from aglora.model.adapter import attach_lora
    from aglora.model.likelihood import score_options_with_lengths
    from aglora.model.neurons import NeuronMask
    from tests.reference import score_options_reference
    from tests.tiny import make_model

    mask = torch.zeros(4, 48)
    mask[2, [3, 9, 40]] = 1
    mask[3, [0, 47]] = 1
    torch.manual_seed(0)
    pm = attach_lora(make_model(layers=4), NeuronMask(mask, [0, 1, 2, 3]), LoraConfig(rank=4))
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)
    shared = ["Alien", "Heat", "Jaws"]
    probes = ([Probe(prompt="Recommend a film.", prefix="1.", answer=a, distractors=shared)
               for a in ["Star Wars", "The Shining", "Rocky"]]
              + FORGET_P + [Probe(prompt="no choice here")])
    ref = score_options_reference(pm, tok, probes)
    decoder = pm.get_base_model().get_decoder()
    lower_rows = [0]
    hook = decoder.layers[0].register_forward_pre_hook(
        lambda m, a: lower_rows.__setitem__(0, lower_rows[0] + a[0].shape[0]))
    try:
        assert not forward.caches_lower_layers(pm)
        with forward.frozen_lower_layers(pm):
            assert forward.caches_lower_layers(pm)
            first, lengths = score_options_with_lengths(pm, tok, probes, batch_size=2)
            n_rows = len(forward._LOWER[0].rows)
            after_first = lower_rows[0]
            again, _ = score_options_with_lengths(pm, tok, probes, batch_size=2)
            assert lower_rows[0] == after_first  # no lower-layer run on the second visit
            with forward.lower_layers_uncached():  # a one-off pass: the KV path, cache aside
                assert not forward.caches_lower_layers(pm)
                once, _ = score_options_with_lengths(pm, tok, probes[:1], batch_size=2)
            assert forward.caches_lower_layers(pm) and len(forward._LOWER[0].rows) == n_rows
    finally:
        hook.remove()
    distinct = {(p.context, o) for p in probes if p.has_choice
                for o in [p.answer, *p.distractors]}
    assert n_rows == len(distinct)  # every distinct (context, option) row once
    assert first[-1] == [] and again[-1] == []
    for got in (first, again, once):
        for f, r in zip(got, ref[: len(got)], strict=True):
            assert len(f) == len(r)
            torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)
    assert lengths == score_options_with_lengths(pm, tok, probes, batch_size=2)[1]  # KV path's


def test_row_batches_cut_at_the_row_limit_and_before_heavy_padding():
    from aglora.model.likelihood import _row_batches
    assert _row_batches([5, 5, 5, 5, 5], 2) == [[0, 1], [2, 3], [4]]
    # 4 rows of 5 then one of 30: the grid 5 x 30 = 150 > 2 x 50 tokens, so it starts a batch.
    assert _row_batches([5, 5, 5, 5, 30], 10) == [[0, 1, 2, 3], [4]]
    assert _row_batches([10, 12, 11], 10) == [[0, 1, 2]]
