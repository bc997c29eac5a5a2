"""Full-parameter methods (aglora.methods.full): gradient difference and NPO on a copy."""

from __future__ import annotations

import pytest

from aglora.methods import apply_method
from tests.methods.helpers import changed_keys, method_inputs, state_of
from tests.tiny import make_model


@pytest.mark.parametrize("name", ["full_gd", "full_npo"])
def test_full_methods_update_weights_of_a_copy(name, tok, concept_path):
    base = make_model()
    before = state_of(base)
    res = apply_method(name, base, tok, method_inputs(concept_path))
    changed = changed_keys(before, res.after)
    assert any("mlp" in k for k in changed) and any("self_attn" in k for k in changed)
    assert res.trainable_params == sum(p.numel() for p in base.parameters())
    assert res.train.steps == 3


def test_full_gd_trains_with_gradient_difference(tok, concept_path):
    res = apply_method("full_gd", make_model(), tok, method_inputs(concept_path))
    # Gradient difference: an unbounded ascent term, so the forget loss is a (negative) mean
    # log-likelihood, and an NLL retain term (positive), not a KL.
    assert all(row["forget_loss"] < 0 for row in res.train.history)
    assert all(row["retain_kl"] == 0.0 for row in res.train.history)


def test_full_npo_kl_uses_the_frozen_base(tok, concept_path):
    res = apply_method("full_npo", make_model(), tok, method_inputs(concept_path))
    # With the base as reference, the KL term is 0 at step 1 and grows once weights move;
    # a reference taken from the trained model itself would stay at exactly 0.
    kls = [row["retain_kl"] for row in res.train.history]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)
    assert max(kls[1:]) > 1e-6
