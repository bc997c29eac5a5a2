"""The base side of an evaluation (aglora.pipeline.eval.sides) comes from the cache on a rerun,
with the same numbers."""

from __future__ import annotations

import json

import torch

import aglora.pipeline.eval.evaluate as evaluate_mod
import aglora.pipeline.eval.sides as sides_mod
from aglora.config import EvalConfig
from tests.tiny import labelled_probes, make_adapted, make_tokenizer


def test_base_side_comes_from_the_cache_on_a_rerun(monkeypatch):
    pm, tok, probes = make_adapted(), make_tokenizer(), labelled_probes()
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


def test_a_rerun_with_the_base_side_cached_gives_the_same_numbers(two_threads, monkeypatch,
                                                                 tmp_path):
    # Cold: base and after side at once; warm: the after side's scoring and generation at once.
    # Each pass runs on one thread both times, so the numbers are the same, not just close.
    monkeypatch.setenv("AGLORA_CACHE", str(tmp_path))
    pm, tok, probes = make_adapted(), make_tokenizer(), labelled_probes()
    cfg = EvalConfig(n_samples=1, max_new_tokens=6)
    _, cold = evaluate_mod.evaluate(pm, tok, probes, cfg)
    assert list((tmp_path / "base-eval").glob("*.json"))
    _, warm = evaluate_mod.evaluate(pm, tok, probes, cfg)
    assert warm == cold
