"""Recording (aglora.pipeline.record): exact statistics on tiny models, hooks always removed."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.model.neurons import capture_neurons, mlp_layers
from aglora.model.tokens import encode
from aglora.pipeline.record import record_statistics
from tests.reference import token_logprobs
from tests.tiny import FORGET, RETAIN, make_model

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
