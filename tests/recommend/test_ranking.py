"""Ranking and NDCG (aglora.recommend.ranking), by hand and on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from aglora.concepts import Probe
from aglora.recommend.ranking import RANK_PREFIX, ndcg_at_k, ranks, title_scores
from tests.reference import score_options_reference
from tests.tiny import make_model, make_tokenizer


def test_ranks_by_hand():
    scores = torch.tensor([[0.5, 2.0, -1.0, 2.0], [3.0, 2.0, 1.0, 0.0]])
    assert ranks(scores).tolist() == [[3, 1, 4, 2], [1, 2, 3, 4]]


def test_ndcg_by_hand():
    base = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert ndcg_at_k(base, base, k=3) == pytest.approx(1.0)
    # base relevance at k=3: t0=3, t1=2, t2=1; after top-3 is t1, t0, t2
    after = [4.0, 5.0, 3.0, 2.0, 1.0]
    expected = (2 + 3 / math.log2(3) + 1 / 2) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg_at_k(base, after, k=3) == pytest.approx(expected)
    assert expected == pytest.approx(0.9224945, abs=1e-6)
    # after top-3 is t3, t4, t0 -> only t0 (rel 3) counts, at position 3
    worse = [3.0, 0.0, -1.0, 5.0, 4.0]
    assert ndcg_at_k(base, worse, k=3) == pytest.approx((3 / 2) / (3 + 2 / math.log2(3) + 0.5))


def test_ndcg_excludes_banned_titles():
    base = [9.0, 5.0, 4.0, 3.0]      # title 0 is banned: it drops to the bottom after
    after = [-9.0, 5.0, 4.0, 3.0]
    assert ndcg_at_k(base, after, exclude={0}, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(base, after, k=3) < 0.9  # counting the banned title would punish the ban
    swapped = [-9.0, 4.0, 5.0, 3.0]  # kept titles 1 and 2 swap: rel 3,2,1 -> order 2,3,1
    expected = (2 + 3 / math.log2(3) + 1 / 2) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg_at_k(base, swapped, exclude={0}, k=3) == pytest.approx(expected)


def test_title_scores_match_reference_on_tiny_model():
    model, tok = make_model(), make_tokenizer()
    titles = ["Inception", "Memento", "Tenet", "Dunkirk", "Interstellar"]
    prompts = ["Recommend a film.", "Who directed Titanic?"]
    got = title_scores(model, tok, prompts, titles, chunk=2, batch_size=4)  # [2, 5]
    for p, text in enumerate(prompts):
        probe = Probe(prompt=text, prefix=RANK_PREFIX, answer=titles[0],
                      distractors=titles[1:])
        ref = score_options_reference(model, tok, [probe])[0]
        assert got[p].tolist() == pytest.approx(ref, abs=1e-4)
    whole = title_scores(model, tok, prompts, titles, chunk=104)
    assert torch.allclose(whole, got, atol=1e-4)
