"""The method registry (aglora.methods): every method leaves the base untouched and works on the
caller's copy when given one."""

from __future__ import annotations

import pytest

from aglora.errors import AgloraError
from aglora.methods import METHODS, apply_method, get_method
from tests.methods.helpers import changed_keys, method_inputs, state_of
from tests.tiny import make_model


def test_unknown_method_lists_choices():
    with pytest.raises(AgloraError) as exc:
        get_method("lora_magic")
    for name in ("ag_lora", "plain_lora", "random_lora", "full_gd", "full_npo", "rmu",
                 "act_edit"):
        assert name in str(exc.value)
        assert name in METHODS


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_leaves_base_untouched(name, tok, concept_path):
    base = make_model()
    before = state_of(base)
    res = apply_method(name, base, tok, method_inputs(concept_path))
    assert res.base is base
    assert res.after is not base
    assert not changed_keys(before, base)
    assert not any(p.requires_grad for p in base.parameters())


@pytest.mark.parametrize("name", ["full_npo", "act_edit", "rmu"])
def test_method_works_on_the_callers_copy(name, tok, concept_path):
    import copy
    base = make_model()
    before = state_of(base)
    inp = method_inputs(concept_path)
    inp.work = copy.deepcopy(base)
    work = inp.work
    res = apply_method(name, base, tok, inp)
    assert res.after is work and inp.work is None  # used once, not kept for the next method
    assert not changed_keys(before, base)
