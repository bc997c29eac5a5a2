"""Each unlearning method changes what it should and nothing else (tiny models)."""

from __future__ import annotations

import pytest
import torch
from tiny import make_model

from aglora.concepts import load_concept
from aglora.config import RunConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.methods import METHODS, apply_method, get_method
from aglora.methods.base import MethodInputs
from aglora.methods.lora import random_mask
from aglora.methods.rmu import RmuConfig
from aglora.model.adapter import standalone_copy
from aglora.model.neurons import capture_neurons, mlp_layers
from aglora.model.tokens import encode

N_LAYERS, D_FF = 3, 48


def _inputs(concept_path, k: int = 5, steps: int = 3, **train) -> MethodInputs:
    cfg = RunConfig()
    cfg.mask.k = k
    cfg.lora.rank = 4
    cfg.train = TrainConfig(max_steps=steps, min_steps=steps, lr=1e-2, batch_size=2,
                            check_every=10**6, **train)
    scores = torch.arange(N_LAYERS * D_FF, dtype=torch.float32).reshape(N_LAYERS, D_FF)
    scores[1] = 0.0  # top-k lands in layer 2 (and 0 only if k > 48)
    return MethodInputs(cfg=cfg, concept=load_concept(concept_path), scores=scores,
                        retain_mean=torch.full((N_LAYERS, D_FF), 0.5),
                        rmu=RmuConfig(layer=2, n_layers=2), log=lambda *_: None)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after_model) -> set[str]:
    after = after_model.state_dict()
    return {k for k, v in before.items() if not torch.equal(after[k], v)}


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
    before = _state(base)
    res = apply_method(name, base, tok, _inputs(concept_path))
    assert res.base is base
    assert res.after is not base
    assert not _changed(before, base)
    assert not any(p.requires_grad for p in base.parameters())


def test_random_lora_selects_as_many_neurons_as_ag_lora(tok, concept_path):
    inp = _inputs(concept_path, k=7)
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
    inp = _inputs(concept_path, k=6)
    a = random_mask(base, inp).mask
    inp.cfg.train.seed = 1
    b = random_mask(base, inp).mask
    assert a.sum() == b.sum() == 6 and not torch.equal(a, b)


def test_plain_lora_covers_every_layer(tok, concept_path):
    res = apply_method("plain_lora", make_model(), tok, _inputs(concept_path))
    wrapped = [layer.index for layer in mlp_layers(res.after)
               if hasattr(layer.module.down_proj, "lora_A")]
    assert wrapped == list(range(N_LAYERS))
    assert res.mask is None and res.trainable_params == res.effective_params


def test_ag_lora_only_touches_layers_with_neurons(tok, concept_path):
    res = apply_method("ag_lora", make_model(), tok, _inputs(concept_path))
    wrapped = [layer.index for layer in mlp_layers(res.after)
               if hasattr(layer.module.down_proj, "lora_A")]
    assert wrapped == [2]  # the top-5 scores all lie in layer 2


@pytest.mark.parametrize("name", ["full_gd", "full_npo"])
def test_full_methods_update_weights_of_a_copy(name, tok, concept_path):
    base = make_model()
    before = _state(base)
    res = apply_method(name, base, tok, _inputs(concept_path))
    changed = _changed(before, res.after)
    assert any("mlp" in k for k in changed) and any("self_attn" in k for k in changed)
    assert res.trainable_params == sum(p.numel() for p in base.parameters())
    assert res.train.steps == 3


def test_full_gd_trains_with_gradient_difference(tok, concept_path):
    res = apply_method("full_gd", make_model(), tok, _inputs(concept_path))
    # Gradient difference: an unbounded ascent term, so the forget loss is a (negative) mean
    # log-likelihood, and an NLL retain term (positive), not a KL.
    assert all(row["forget_loss"] < 0 for row in res.train.history)
    assert all(row["retain_kl"] == 0.0 for row in res.train.history)


def test_full_npo_kl_uses_the_frozen_base(tok, concept_path):
    res = apply_method("full_npo", make_model(), tok, _inputs(concept_path))
    # With the base as reference, the KL term is 0 at step 1 and grows once weights move;
    # a reference taken from the trained model itself would stay at exactly 0.
    kls = [row["retain_kl"] for row in res.train.history]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)
    assert max(kls[1:]) > 1e-6


def test_rmu_updates_only_its_layers(tok, concept_path):
    base = make_model()
    before = _state(base)
    res = apply_method("rmu", base, tok, _inputs(concept_path))
    changed = _changed(before, res.after)
    assert changed == {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert res.trainable_params == 2 * D_FF * base.config.hidden_size


def test_act_edit_zeroes_exactly_the_selected_neurons(tok, concept_path):
    base = make_model()
    inp = _inputs(concept_path, k=4)
    inp.scores = torch.zeros(N_LAYERS, D_FF)
    inp.scores[2, [3, 10, 20, 40]] = 1.0  # the last layer: upstream neurons must be unchanged
    res = apply_method("act_edit", base, tok, inp)
    assert res.trainable_params == 0 and not _changed(_state(base), res.after)
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
    inp = _inputs(concept_path, k=3)
    inp.act_edit.mode = "mean"
    res = apply_method("act_edit", make_model(), tok, inp)
    batch = encode(tok, inp.concept.forget[:1], ["x"])
    with torch.no_grad(), capture_neurons(mlp_layers(res.after)) as store:
        res.after(input_ids=batch.input_ids)
        row = store[2][0]  # [seq, d_ff]
    sel = res.mask.row(2).bool()
    assert torch.allclose(row[:, sel], torch.full_like(row[:, sel], 0.5))


def test_attack_copy_is_standalone(tok, concept_path):
    inp = _inputs(concept_path)
    res = apply_method("ag_lora", make_model(), tok, inp)
    attacked = standalone_copy(res.after)
    assert not hasattr(attacked, "disable_adapter")
    batch = encode(tok, inp.concept.forget, ["a"] * len(inp.concept.forget))
    with torch.no_grad():
        a = attacked(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        b = res.after(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_mask_shape_mismatch_is_refused(tok, concept_path):
    inp = _inputs(concept_path)
    inp.scores = torch.ones(N_LAYERS, D_FF + 1)
    with pytest.raises(AgloraError, match="does not fit"):
        apply_method("act_edit", make_model(), tok, inp)


@pytest.mark.parametrize("name", ["full_npo", "act_edit", "rmu"])
def test_method_works_on_the_callers_copy(name, tok, concept_path):
    import copy
    base = make_model()
    before = _state(base)
    inp = _inputs(concept_path)
    inp.work = copy.deepcopy(base)
    work = inp.work
    res = apply_method(name, base, tok, inp)
    assert res.after is work and inp.work is None  # used once, not kept for the next method
    assert not _changed(before, base)


def test_unfrozen_restores_eval_mode_and_frozen_weights_even_on_error():
    from aglora.pipeline.train.loop import unfrozen
    model = make_model()
    model.eval()
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"), unfrozen(model, params):
        assert model.training and all(p.requires_grad for p in params)
        model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
        assert params[0].grad is not None
        raise RuntimeError("boom")
    assert not model.training
    assert not any(p.requires_grad for p in params)
    assert all(p.grad is None for p in params)
