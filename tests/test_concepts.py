"""Guards for the remaining mistakes of DESIGN.md section 7: template mismatch between training
and evaluation, unseeded sampling, and a forget set of one prompt."""

from __future__ import annotations

import random

import pytest
import yaml
from conftest import FORGET

from aglora.concepts import Probe, load_concept
from aglora.config import TrainConfig
from aglora.errors import AgloraError
from aglora.model.decode import generate, generation_context
from aglora.model.likelihood import _tokenize
from aglora.pipeline.train.targets import forget_batch


def test_training_and_evaluation_share_the_chat_template(tok):
    probe = Probe(**FORGET[0])
    train_batch = forget_batch(tok, [probe], TrainConfig(forget_objective="npo"), [], [],
                                random.Random(0))
    ctx_ids, option_ids = _tokenize(tok, probe)  # what evaluation scores
    n = int(train_batch.attention_mask.sum())
    assert train_batch.input_ids[0, :n].tolist() == ctx_ids + option_ids[0]
    template_start = tok("<|im_start|>system", add_special_tokens=False)["input_ids"]
    assert ctx_ids[: len(template_start)] == template_start
    assert generation_context(tok, probe).startswith("<|im_start|>system")


def test_generation_is_seeded_and_greedy_first(model, tok):
    probes = [Probe(**r) for r in FORGET]
    a = generate(model, tok, probes, n_samples=2, max_new_tokens=6, seed=7)
    b = generate(model, tok, probes, n_samples=2, max_new_tokens=6, seed=7)
    assert a == b and all(len(g) == 3 for g in a)
    greedy_only = generate(model, tok, probes, n_samples=0, max_new_tokens=6)
    assert [g[0] for g in a] == [g[0] for g in greedy_only]


def test_forget_set_of_one_prompt_is_refused(concept_path):
    spec = yaml.safe_load(concept_path.read_text())
    spec["forget"] = spec["forget"][:1]
    concept_path.write_text(yaml.safe_dump(spec))
    with pytest.raises(AgloraError, match="one item"):
        load_concept(concept_path)
