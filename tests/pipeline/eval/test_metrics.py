"""A planted collapsed model (answers everything with one word) gets the collapse verdict
(aglora.pipeline.eval.metrics), even though its forget numbers look perfect (docs/method.md
section 13)."""

from __future__ import annotations

import torch

from aglora.concepts import Probe
from aglora.config import EvalConfig, LoraConfig, TrainConfig
from aglora.model.adapter import attach_lora
from aglora.pipeline.eval.evaluate import evaluate
from aglora.pipeline.train.loop import train
from tests.tiny import FORGET, RETAIN, make_model, make_tokenizer


def test_one_word_model_is_called_degenerate():
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = make_model()
    forget = [Probe(**r, split="forget", leak_patterns=["nolan", "ridley"]) for r in FORGET]
    neighbor = [Probe(**r, split="neighbor") for r in RETAIN]
    everything = forget + neighbor
    pm = attach_lora(model, None, LoraConfig(masked=False, all_layers=True, rank=8,
                                             modules=["down_proj", "up_proj"]))
    cfg = TrainConfig(forget_objective="none", forget_response="refuse",
                      retain_objective="none", lr=3e-2, max_steps=80, min_steps=80,
                      batch_size=6, check_every=10**6)
    train(pm, tok, everything, [], cfg, refusals=["FORGOTTEN FORGOTTEN FORGOTTEN"],
          log=lambda *_: None)
    probes = [Probe(**{**r, "prompt": r["prompt"] + " Answer."}, split="forget",
                    family="direct", leak_patterns=["nolan"]) for r in FORGET]
    probes += [Probe(**{**r, "prompt": r["prompt"] + " Answer."}, split="neighbor",
                     family="same-answer") for r in RETAIN]
    metrics, records = evaluate(pm, tok, probes, EvalConfig(n_samples=0, max_new_tokens=12))
    after = [g for r in records if r["split"] == "neighbor" for g in r["after_generations"]]
    assert len(after) == 3 and len(set(after)) == 1          # the plant worked: one answer
    assert metrics["splits"]["forget"]["leak_rate"]["after"] == 0.0  # "perfect" forgetting
    assert metrics["verdict"]["degenerate"]
    assert any("distinct-2" in r or "repetition" in r for r in metrics["verdict"]["reasons"])
