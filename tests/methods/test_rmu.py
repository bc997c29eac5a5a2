"""RMU (aglora.methods.rmu) updates only its layers."""

from __future__ import annotations

from aglora.methods import apply_method
from tests.methods.helpers import D_FF, changed_keys, method_inputs, state_of
from tests.tiny import make_model


def test_rmu_updates_only_its_layers(tok, concept_path):
    base = make_model()
    before = state_of(base)
    res = apply_method("rmu", base, tok, method_inputs(concept_path))
    changed = changed_keys(before, res.after)
    assert changed == {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert res.trainable_params == 2 * D_FF * base.config.hidden_size
