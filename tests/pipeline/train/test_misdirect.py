"""Name misdirection (aglora.pipeline.train.misdirect): the name's token positions, the loss at
the start (exactly 1) and at the target (0), the layers after the one read not run, and a masked
adapter trained with the term staying confined and moving the representation."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.config import LoraConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.model.adapter import attach_lora
from aglora.model.tokens import encode
from aglora.pipeline.train.misdirect import (
    NameMisdirection,
    hidden_after,
    name_positions,
    name_spans,
)
from tests.tiny import (
    LORA_FORGET,
    LORA_RETAIN,
    assert_down_proj_confined,
    make_model,
    make_tokenizer,
    sparse_mask,
)


def test_name_spans_are_whole_words_in_any_case():
    text = "Inception, or INCEPTION? Inceptions are not it."
    assert name_spans(text, ["Inception"]) == [(0, 9), (14, 23)]


def test_name_positions_are_the_tokens_that_spell_the_name():
    tok = make_tokenizer()
    probe = Probe(prompt="Who directed Inception?", prefix="It was directed by", answer="x")
    pos = name_positions(tok, probe, ["Inception"])
    ids = encode(tok, [probe], [""]).input_ids[0]
    assert pos and tok.decode(ids[pos]).strip() == "Inception"
    assert name_positions(tok, probe, ["Titanic"]) == []


def test_hidden_after_a_layer_equals_the_full_pass_and_skips_the_rest():
    model = make_model(layers=3)
    ids = torch.tensor([[5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    full = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    calls = []
    handle = model.model.layers[2].register_forward_hook(lambda *_: calls.append(1))
    out = hidden_after(model, ids, mask, 1)
    handle.remove()
    torch.testing.assert_close(out, full.hidden_states[2])  # hidden_states[0] is the embedding
    assert calls == []
    with pytest.raises(AgloraError, match="has 3"):
        hidden_after(model, ids, mask, 3)


def _adapted():
    torch.manual_seed(0)
    return attach_lora(make_model(seed=3), sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))


def test_the_loss_is_one_at_the_start_and_zero_at_the_target():
    pm, tok = _adapted(), make_tokenizer()
    term = NameMisdirection(pm, tok, LORA_FORGET, ["Inception"], layer=2, shift=0.5)
    assert float(term.loss(pm, [0], torch.device("cpu"))) == pytest.approx(1.0, abs=1e-6)
    base = term.base_hidden[0]
    # A model whose layer-2 output is the target: add the shift through a hook.
    size = 0.5 * base.norm(dim=-1, keepdim=True)
    pos = term.positions[0]

    def to_target(_m, _a, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[0, pos] = base + size * term.direction
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = pm.base_model.model.model.layers[2].register_forward_hook(to_target)
    try:
        assert float(term.loss(pm, [0], torch.device("cpu"))) == pytest.approx(0.0, abs=1e-10)
    finally:
        handle.remove()


def test_items_that_do_not_name_the_concept_are_refused_or_skipped():
    pm, tok = _adapted(), make_tokenizer()
    with pytest.raises(AgloraError, match="names the concept"):
        NameMisdirection(pm, tok, LORA_FORGET, ["Titanic"], layer=2, shift=1.0)
    unnamed = Probe(prompt="Which film is about dreams?", prefix="It is", answer="Inception")
    term = NameMisdirection(pm, tok, [unnamed, *LORA_FORGET], ["Inception"], layer=2, shift=1.0)
    zero = term.loss(pm, [0], torch.device("cpu"))
    assert float(zero) == 0.0


@pytest.mark.slow
def test_training_with_the_term_moves_the_name_and_stays_confined():
    from aglora.pipeline.train.loop import train
    pm, tok = _adapted(), make_tokenizer()
    cfg = TrainConfig(lr=5e-2, max_steps=6, min_steps=6, batch_size=1, check_every=10**6,
                      forget_name_weight=1.0, forget_objective="none")
    train(pm, tok, LORA_FORGET, LORA_RETAIN, cfg, log=lambda *_: None,
          names=["Inception"], name_layer=2)
    assert_down_proj_confined(pm, sparse_mask())
    term = NameMisdirection(pm, tok, LORA_FORGET, ["Inception"], layer=2, shift=1.0)
    assert float(term.loss(pm, [0], torch.device("cpu"))) < 0.9
