"""LoRA methods (aglora.methods.lora): AG, random and plain masks; the attack copy is standalone."""

from __future__ import annotations

import torch

from aglora.methods import apply_method
from aglora.methods.lora import random_mask
from aglora.model.adapter import standalone_copy
from aglora.model.neurons import mlp_layers
from aglora.model.tokens import encode
from tests.methods.helpers import N_LAYERS, method_inputs
from tests.tiny import make_model


def test_random_lora_selects_as_many_neurons_as_ag_lora(tok, concept_path):
    inp = method_inputs(concept_path, k=7)
    ag = apply_method("ag_lora", make_model(), tok, inp)
    rnd = apply_method("random_lora", make_model(), tok, inp)
    assert ag.mask.n_selected == rnd.mask.n_selected == 7
    assert not torch.equal(ag.mask.mask, rnd.mask.mask)
    # Effective entries: r per selected column of A, plus B ([hidden, r]) per wrapped layer.
    r, hidden = inp.cfg.lora.rank, 32
    for res in (ag, rnd):
        n_layers = len(res.mask.layers_with_neurons())
        assert res.effective_params == 7 * r + n_layers * hidden * r


def test_random_mask_depends_on_seed(concept_path):
    base = make_model()
    inp = method_inputs(concept_path, k=6)
    a = random_mask(base, inp).mask
    inp.cfg.train.seed = 1
    b = random_mask(base, inp).mask
    assert a.sum() == b.sum() == 6 and not torch.equal(a, b)


def test_plain_lora_covers_every_layer(tok, concept_path):
    res = apply_method("plain_lora", make_model(), tok, method_inputs(concept_path))
    wrapped = [layer.index for layer in mlp_layers(res.after)
               if hasattr(layer.module.down_proj, "lora_A")]
    assert wrapped == list(range(N_LAYERS))
    assert res.mask is None and res.trainable_params == res.effective_params


def test_ag_lora_only_touches_layers_with_neurons(tok, concept_path):
    res = apply_method("ag_lora", make_model(), tok, method_inputs(concept_path))
    wrapped = [layer.index for layer in mlp_layers(res.after)
               if hasattr(layer.module.down_proj, "lora_A")]
    assert wrapped == [2]  # the top-5 scores all lie in layer 2


def test_attack_copy_is_standalone(tok, concept_path):
    inp = method_inputs(concept_path)
    res = apply_method("ag_lora", make_model(), tok, inp)
    attacked = standalone_copy(res.after)
    assert not hasattr(attacked, "disable_adapter")
    batch = encode(tok, inp.concept.forget, ["a"] * len(inp.concept.forget))
    with torch.no_grad():
        a = attacked(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        b = res.after(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(a, b, atol=1e-5)
