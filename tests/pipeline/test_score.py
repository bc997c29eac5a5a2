"""Scoring (aglora.pipeline.score): deterministic, exact on planted statistics."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.errors import AgloraError
from aglora.pipeline.record import record
from aglora.pipeline.score import compute_scores, rank
from tests.tiny import FORGET, RETAIN, make_model

FORGET_P = [Probe(**r) for r in FORGET]
RETAIN_P = [Probe(split="neighbor", **r) for r in RETAIN]


def test_scores_deterministic(model, tok):
    s1 = compute_scores(record(model, tok, FORGET_P, RETAIN_P), "ratio")
    s2 = compute_scores(record(make_model(), tok, FORGET_P, RETAIN_P), "ratio")
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key
    r1 = compute_scores(record(model, tok, FORGET_P, RETAIN_P), "random", seed=3)["score"]
    r2 = compute_scores(record(model, tok, FORGET_P, RETAIN_P), "random", seed=3)["score"]
    assert torch.equal(r1, r2)


def test_ratio_scorer_exact():
    ones = torch.ones(1, 2)
    stats = {"forget.saliency": torch.tensor([[4.0, 1.0]]),
             "retain.saliency": torch.tensor([[1.0, 1.0]]),
             "forget.fisher": torch.tensor([[2.0, 3.0]]),
             "retain.fisher": torch.tensor([[1.0, 3.0]]),
             "forget.act_mean": ones, "retain.act_mean": ones, "retain.act_var": ones}
    score = compute_scores(stats, "ratio", eps=0.0)["score"]
    assert torch.equal(score, torch.tensor([[8.0, 1.0]]))


def test_rank_is_order_of_values():
    assert torch.equal(rank(torch.tensor([[0.5, -1.0, 3.0]])), torch.tensor([[0.5, 0.0, 1.0]]))


def test_unknown_scorer_is_an_error():
    with pytest.raises(AgloraError, match="unknown scorer"):
        compute_scores({"forget.saliency": torch.ones(1, 1)}, "nope")
