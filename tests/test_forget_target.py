"""The forget target: leading words listed in `train.forget_skip_leading` are moved into the
context, so NPO / gradient ascent push down only the words that make the answer."""

from __future__ import annotations

import pytest
import torch
from tiny import make_model

from aglora.concepts import Probe
from aglora.config import TrainConfig, load_config
from aglora.forward import target_logprobs
from aglora.text import encode
from aglora.train import answer_batch, split_leading_words


@pytest.mark.parametrize("answer, words, expected", [
    ("The Matrix", ["The"], ("The", "Matrix")),
    ("The The End", ["The"], ("The The", "End")),
    ("The", ["The"], ("", "The")),            # one word always stays the target
    ("Star Wars", ["The"], ("", "Star Wars")),
    ("the Matrix", ["The"], ("", "the Matrix")),  # case-sensitive, as listed
    ("The Matrix", [], ("", "The Matrix")),
])
def test_split_leading_words(answer, words, expected):
    assert split_leading_words(answer, words) == expected


@pytest.mark.parametrize("fmt, prefix", [("chat", "Here are films:\n\n1."), ("completion", "")])
def test_skipped_words_leave_the_target_and_its_logprob(tok, fmt, prefix):
    """log p(The capital | ctx) = log p(The | ctx) + log p(capital | ctx The), so the target
    without 'The' scores the full answer minus the article, and has one token fewer."""
    model = make_model(seed=3)
    probe = Probe(prompt="Tell me a fact.", format=fmt, prefix=prefix,
                  answer="The capital of France")
    full = encode(tok, [probe], [probe.answer])
    article = encode(tok, [probe], ["The"])
    skipped = answer_batch(tok, [probe], ["The"])
    assert torch.equal(full.input_ids, skipped.input_ids)  # same text, same tokens
    n_article = int(article.target_mask.sum())
    assert n_article >= 1
    assert int(skipped.target_mask.sum()) == int(full.target_mask.sum()) - n_article
    with torch.no_grad():
        lp_full = target_logprobs(model, full)
        lp_article = target_logprobs(model, article)
        lp_skipped = target_logprobs(model, skipped)
    torch.testing.assert_close(lp_skipped + lp_article, lp_full, atol=1e-5, rtol=0)
    assert torch.equal(answer_batch(tok, [probe], []).target_mask, full.target_mask)


def test_skip_leading_is_a_config_list():
    cfg = load_config(None, ["train.forget_skip_leading=The,A"])
    assert cfg.train.forget_skip_leading == ["The", "A"]
    assert TrainConfig().forget_skip_leading == []
