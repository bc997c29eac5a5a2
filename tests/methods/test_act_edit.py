"""Activation editing (aglora.methods.act_edit): exactly the selected neurons, zeroed or clamped."""

from __future__ import annotations

import pytest
import torch

from aglora.errors import AgloraError
from aglora.methods import apply_method
from aglora.model.neurons import capture_neurons, mlp_layers
from aglora.model.tokens import encode
from tests.methods.helpers import D_FF, N_LAYERS, changed_keys, method_inputs, state_of
from tests.tiny import make_model


def test_act_edit_zeroes_exactly_the_selected_neurons(tok, concept_path):
    base = make_model()
    inp = method_inputs(concept_path, k=4)
    inp.scores = torch.zeros(N_LAYERS, D_FF)
    inp.scores[2, [3, 10, 20, 40]] = 1.0  # the last layer: upstream neurons must be unchanged
    res = apply_method("act_edit", base, tok, inp)
    assert res.trainable_params == 0 and not changed_keys(state_of(base), res.after)
    c = inp.concept
    batch = encode(tok, c.forget, [p.answer for p in c.forget])
    acts = {}
    for label, model in (("base", base), ("after", res.after)):
        with torch.no_grad(), capture_neurons(mlp_layers(model)) as store:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            acts[label] = {k: v.clone() for k, v in store.items()}  # [batch, seq, d_ff]
    sel = torch.zeros(D_FF, dtype=torch.bool)
    sel[[3, 10, 20, 40]] = True
    assert torch.equal(acts["after"][0], acts["base"][0])
    assert torch.equal(acts["after"][1], acts["base"][1])
    assert torch.count_nonzero(acts["after"][2][..., sel]) == 0
    assert torch.count_nonzero(acts["base"][2][..., sel]) > 0
    assert torch.equal(acts["after"][2][..., ~sel], acts["base"][2][..., ~sel])


def test_act_edit_mean_mode_clamps_to_retain_mean(tok, concept_path):
    inp = method_inputs(concept_path, k=3)
    inp.act_edit.mode = "mean"
    res = apply_method("act_edit", make_model(), tok, inp)
    batch = encode(tok, inp.concept.forget[:1], ["x"])
    with torch.no_grad(), capture_neurons(mlp_layers(res.after)) as store:
        res.after(input_ids=batch.input_ids)
        row = store[2][0]  # [seq, d_ff]
    sel = res.mask.row(2).bool()
    assert torch.allclose(row[:, sel], torch.full_like(row[:, sel], 0.5))


def test_mask_shape_mismatch_is_refused(tok, concept_path):
    inp = method_inputs(concept_path)
    inp.scores = torch.ones(N_LAYERS, D_FF + 1)
    with pytest.raises(AgloraError, match="does not fit"):
        apply_method("act_edit", make_model(), tok, inp)
