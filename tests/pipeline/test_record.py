"""Recording, scoring and mask selection: exact expectations on tiny models."""

from __future__ import annotations

import pytest
import torch
from conftest import FORGET, RETAIN
from tiny import make_model

from aglora.concepts import Probe
from aglora.config import MaskConfig
from aglora.errors import AgloraError
from aglora.model.neurons import capture_neurons, mlp_layers
from aglora.model.tokens import encode, token_logprobs
from aglora.pipeline.mask import select
from aglora.pipeline.record import record, record_statistics
from aglora.pipeline.score import compute_scores, rank

FORGET_P = [Probe(**r) for r in FORGET]
RETAIN_P = [Probe(split="neighbor", **r) for r in RETAIN]


def _hook_count(model) -> int:
    return sum(len(layer.module.down_proj._forward_pre_hooks) for layer in mlp_layers(model))


def test_hooks_removed_after_recording_and_after_errors(model, tok):
    record_statistics(model, tok, FORGET_P[:1])
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError), capture_neurons(mlp_layers(model)):
        assert _hook_count(model) == len(mlp_layers(model))
        raise RuntimeError("boom")
    assert _hook_count(model) == 0


def test_statistics_live_in_the_neuron_space_not_the_residual_stream(tok):
    model = make_model(d_ff=48)  # d_model is 32: a d_model-sized score would be the section-7 bug
    stats = record_statistics(model, tok, FORGET_P)
    for value in stats.values():
        assert value.shape == (3, 48)


def test_saliency_and_fisher_match_a_manual_autograd_computation(model, tok):
    probe = FORGET_P[0]
    stats = record_statistics(model, tok, [probe])
    batch = encode(tok, [probe], [probe.answer])
    layer = mlp_layers(model)[1]
    captured = {}

    def hook(_m, args):
        args[0].retain_grad()
        captured["a"] = args[0]

    handle = layer.module.down_proj.register_forward_pre_hook(hook)
    try:
        embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds).logits
        # The concept-specific loss: NLL of the answer tokens only.
        nll = -(token_logprobs(logits, batch.input_ids) * batch.target_mask).sum()
        nll.backward()
    finally:
        handle.remove()
    a, g = captured["a"][0], captured["a"].grad[0]  # [seq, d_ff]
    content = batch.content_mask[0].bool()
    expected_sal = (a[content] * g[content]).abs().sum(0)
    expected_fisher = g[content].sum(0).pow(2)
    torch.testing.assert_close(stats["saliency"][1], expected_sal, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(stats["fisher"][1], expected_fisher, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(stats["act_mean"][1], a[content].mean(0), rtol=1e-4, atol=1e-6)


def test_saliency_is_concept_specific(model, tok):
    """Another answer (another concept) gives other saliency: the loss is not logits.mean()."""
    a = record_statistics(model, tok, FORGET_P[:1])["saliency"]
    other = Probe(**{**FORGET[0], "answer": "James Cameron"})
    b = record_statistics(model, tok, [other])["saliency"]
    assert not torch.allclose(a, b)


def test_scores_deterministic(model, tok):
    s1 = compute_scores(record(model, tok, FORGET_P, RETAIN_P), "ratio")
    s2 = compute_scores(record(make_model(), tok, FORGET_P, RETAIN_P), "ratio")
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key
    r1 = compute_scores(record(model, tok, FORGET_P, RETAIN_P), "random", seed=3)["score"]
    r2 = compute_scores(record(model, tok, FORGET_P, RETAIN_P), "random", seed=3)["score"]
    assert torch.equal(r1, r2)


def test_ratio_scorer_exact():
    ones = torch.ones(1, 2)
    stats = {"forget.saliency": torch.tensor([[4.0, 1.0]]),
             "retain.saliency": torch.tensor([[1.0, 1.0]]),
             "forget.fisher": torch.tensor([[2.0, 3.0]]),
             "retain.fisher": torch.tensor([[1.0, 3.0]]),
             "forget.act_mean": ones, "retain.act_mean": ones, "retain.act_var": ones}
    score = compute_scores(stats, "ratio", eps=0.0)["score"]
    assert torch.equal(score, torch.tensor([[8.0, 1.0]]))


def test_rank_is_order_of_values():
    assert torch.equal(rank(torch.tensor([[0.5, -1.0, 3.0]])), torch.tensor([[0.5, 0.0, 1.0]]))


def test_unknown_scorer_is_an_error():
    with pytest.raises(AgloraError, match="unknown scorer"):
        compute_scores({"forget.saliency": torch.ones(1, 1)}, "nope")


def test_topk_selects_by_score_not_by_index():
    score = torch.tensor([[0.1, 0.9, 0.2, 0.8],
                          [0.95, 0.0, 0.3, 0.05]])
    mask = select(score, MaskConfig(selection="topk_global", k=3))
    assert torch.equal(mask, torch.tensor([[0.0, 1, 0, 1], [1, 0, 0, 0]]))
    per_layer = select(score, MaskConfig(selection="topk_per_layer", k=1))
    assert torch.equal(per_layer, torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    frac = select(score, MaskConfig(selection="fraction", fraction=0.25))
    assert torch.equal(frac, torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    # Reversed index order gives the mirrored mask: selection follows values, not positions.
    flipped = select(score.flip(1), MaskConfig(selection="topk_global", k=3))
    assert torch.equal(flipped, mask.flip(1))


def test_logits_at_targets_equal_full_forward(model, tok):
    """Projecting only the answer positions gives the same log-probs as the full forward."""
    from aglora.model.forward import target_logprobs
    from aglora.model.tokens import sequence_logprob

    batch = encode(tok, FORGET_P + RETAIN_P, [p.answer for p in FORGET_P + RETAIN_P])
    with torch.no_grad():
        full = sequence_logprob(model(input_ids=batch.input_ids,
                                      attention_mask=batch.attention_mask).logits, batch)
        fast = target_logprobs(model, batch)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    assert (full < 0).all()


def test_kv_shared_option_scoring_matches_reference(model, tok):
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.model.likelihood import score_options, score_options_reference

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
    ref = lik.score_options_reference(model, tok, probes)
    for f, r in zip(fast, ref, strict=True):
        assert len(f) == len(r)
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)
    # A chunk holds at most batch_size // 4 distinct contexts: here 1, so 2 chunks.
    rows_run.clear()
    again = lik.score_options(model, tok, probes, batch_size=4)
    assert rows_run == [1, 1]
    for f, r in zip(again, ref, strict=True):
        torch.testing.assert_close(torch.tensor(f), torch.tensor(r), atol=1e-4, rtol=1e-5)


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
