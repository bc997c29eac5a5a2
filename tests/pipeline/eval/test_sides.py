"""Evaluation shortcuts give the same numbers: the folded adapter, the cached base side."""

from __future__ import annotations

import json

import torch
from conftest import FORGET, RETAIN
from tiny import make_model, make_tokenizer

import aglora.pipeline.eval.evaluate as evaluate_mod
import aglora.pipeline.eval.sides as sides_mod
from aglora.concepts import Probe
from aglora.config import EvalConfig, LoraConfig
from aglora.model.adapter import attach_lora, merged_copy
from aglora.model.neurons import NeuronMask


def _adapted():
    torch.manual_seed(0)
    model = make_model()
    mask = NeuronMask(torch.zeros(3, 48), [0, 1, 2])
    mask.mask[1, :5] = 1.0
    pm = attach_lora(model, mask, LoraConfig(rank=4))
    for name, p in pm.named_parameters():
        if "lora_B" in name:  # a non-zero adapter, as after training
            torch.nn.init.normal_(p, std=0.2)
    return pm


def _probes() -> list[Probe]:
    return ([Probe(**r, id=f"f{i}", split="forget", family="direct",
                   leak_patterns=["nolan"]) for i, r in enumerate(FORGET)]
            + [Probe(**r, id=f"n{i}", split="neighbor", family="same-answer")
               for i, r in enumerate(RETAIN)])


def test_folded_adapter_computes_what_the_adapter_computes():
    pm = _adapted()
    ids = torch.tensor([[5, 9, 14, 3, 27, 8]])
    with torch.no_grad():
        want = pm(input_ids=ids).logits
        merged = merged_copy(pm)
        got = merged(input_ids=ids).logits
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits
    assert not hasattr(merged, "disable_adapter")          # a plain model
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(want, base, atol=1e-3)       # the adapter does change the output
    with torch.no_grad(), pm.disable_adapter():            # the adapter model is left as it was
        assert torch.equal(pm(input_ids=ids).logits, base)


def test_base_side_comes_from_the_cache_on_a_rerun(monkeypatch):
    pm, tok, probes = _adapted(), make_tokenizer(), _probes()
    cfg = EvalConfig(n_samples=1, max_new_tokens=6)
    first, _ = evaluate_mod.evaluate(pm, tok, probes, cfg)
    calls: list[str] = []
    real_measure = evaluate_mod.measure

    def counting(model, tok, probes, cfg, gen_mask, label, *rest):
        calls.append(label)
        return real_measure(model, tok, probes, cfg, gen_mask, label, *rest)

    monkeypatch.setattr(evaluate_mod, "measure", counting)
    monkeypatch.setattr(sides_mod, "measure", counting)
    again, _ = evaluate_mod.evaluate(pm, tok, probes, cfg)
    assert calls == ["after"]
    def same(m: dict) -> str:  # NaN-safe comparison
        return json.dumps({k: v for k, v in m.items() if k != "eval_seconds"}, sort_keys=True)

    assert same(again) == same(first)
    # Other probes, other settings or other base weights: measured again.
    evaluate_mod.evaluate(pm, tok, probes[:-1], cfg)
    evaluate_mod.evaluate(pm, tok, probes, EvalConfig(n_samples=1, max_new_tokens=7))
    with torch.no_grad():
        pm.get_base_model().model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    evaluate_mod.evaluate(pm, tok, probes, cfg)
    evaluate_mod.evaluate(pm, tok, probes, EvalConfig(n_samples=1, max_new_tokens=6,
                                                      cache_base=False))
    # (base and after may run at once in two threads: their order is not fixed)
    assert calls[0] == "after" and sorted(calls[1:]) == ["after"] * 4 + ["base"] * 4


def test_weights_digest_follows_base_weight_changes_only():
    from aglora.model.identity import weights_digest

    pm = _adapted()
    first = weights_digest(pm)
    assert weights_digest(pm) == first                 # memoised, unchanged
    for name, p in pm.named_parameters():             # adapter weights do not count
        if "lora_B" in name:
            with torch.no_grad():
                p.add_(1.0)
    assert weights_digest(pm) == first
    weight = pm.get_base_model().model.layers[0].mlp.up_proj.weight
    original = float(weight[0, 0])
    with torch.no_grad():                             # an in-place edit of a base weight does
        weight[0, 0] = original + 1.0
    assert weights_digest(pm) != first
    with torch.no_grad():
        weight[0, 0] = original
    assert weights_digest(pm) == first                 # same values, same digest
    fresh = _adapted()                                 # same seed, same weights, no memo
    assert weights_digest(fresh) == first
