"""The forget target: leading words listed in `train.forget_skip_leading` are moved into the
context, so NPO / gradient ascent push down only the words that make the answer."""

from __future__ import annotations

import math

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


def test_blocked_distribution_by_hand():
    from aglora.objectives import blocked_distribution
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    target = blocked_distribution(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(target, torch.tensor([[0.0, 0.5, 0.5], [0.25, 0.0, 0.75]]))


def test_blocklist_kl_is_zero_at_the_blocklist_and_positive_elsewhere():
    from aglora.objectives import blocked_distribution, blocklist_kl_loss
    target = blocked_distribution(torch.log(torch.tensor([[0.5, 0.25, 0.25]])),
                                  torch.tensor([0]))
    # a model that already gives the blocked token (almost) nothing: loss ~ 0
    at_target = torch.log(torch.tensor([[1e-12, 0.5, 0.5]]))
    assert float(blocklist_kl_loss(at_target, target)) == pytest.approx(0.0, abs=1e-6)
    # the base model itself: KL = sum_i t_i log(t_i / p_i) = log 2 for this case
    base = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert float(blocklist_kl_loss(base, target)) == pytest.approx(math.log(2), abs=1e-6)


def test_blocklist_kl_training_starts_at_its_closed_form_and_lowers_the_answer(tok):
    """At the base model, KL(blocked || base) = -log(1 - p_answer) per answer token (exact);
    training on it (no retain term) lowers the answer tokens' probability and the loss."""
    from aglora.config import LoraConfig
    from aglora.forward import logits_at, next_token_ids
    from aglora.lora import attach_lora
    from aglora.train import train
    model = make_model(seed=1)
    forget = [Probe(prompt="Tell me a fact.", prefix="Fact:", answer="The capital of France")]
    pm = attach_lora(model, None, LoraConfig(rank=4, masked=False))
    skipped = answer_batch(tok, forget, ["The"])
    with torch.no_grad():
        before = float(target_logprobs(pm, skipped))
        probs = torch.softmax(logits_at(pm, skipped, skipped.target_mask), -1)  # [n, vocab]
        p_answer = probs.gather(-1, next_token_ids(skipped, skipped.target_mask)[:, None])[:, 0]
    closed_form = float((-torch.log1p(-p_answer)).mean())
    cfg = TrainConfig(forget_objective="blocklist_kl", forget_skip_leading=["The"], lr=5e-2,
                      max_steps=8, min_steps=8, batch_size=1, check_every=10**6)
    result = train(pm, tok, forget, [], cfg, log=lambda *_: None)
    losses = [row["forget_loss"] for row in result.history]
    assert losses[0] == pytest.approx(closed_form, rel=1e-4)  # step 1 scores the base model
    with torch.no_grad():
        after = float(target_logprobs(pm, skipped))
    assert after < before
    assert losses[-1] < losses[0]
