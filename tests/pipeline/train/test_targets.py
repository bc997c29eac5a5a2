"""The forget target (aglora.pipeline.train.targets): leading words listed in
`train.forget_skip_leading` are moved into the context, so NPO / gradient ascent push down only
the words that make the answer; training and evaluation share the chat template."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.model.decode import generation_context
from aglora.model.forward import target_logprobs
from aglora.model.likelihood import _tokenize
from aglora.model.tokens import encode
from aglora.pipeline.train.targets import answer_batch, split_leading_words
from tests.tiny import FORGET, make_model


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


def test_training_and_evaluation_share_the_chat_template(tok):
    probe = Probe(**FORGET[0])
    train_batch = answer_batch(tok, [probe], TrainConfig().forget_skip_leading)
    ctx_ids, option_ids = _tokenize(tok, probe)  # what evaluation scores
    n = int(train_batch.attention_mask.sum())
    assert train_batch.input_ids[0, :n].tolist() == ctx_ids + option_ids[0]
    template_start = tok("<|im_start|>system", add_special_tokens=False)["input_ids"]
    assert ctx_ids[: len(template_start)] == template_start
    assert generation_context(tok, probe).startswith("<|im_start|>system")


def test_pushed_tokens_join_answers_after_the_same_context(tok):
    """Two titles after one list prompt (leading "The" skipped) share their context up to the
    first token where they differ: there each item's set holds both tokens; from then on the
    contexts differ and each holds its own. An item with another prompt holds its own only."""
    from aglora.model.forward import next_token_ids
    from aglora.pipeline.train.targets import pushed_tokens
    prompt, prefix = "Recommend films.", "Here are films:\n\n1."
    items = [Probe(prompt=prompt, prefix=prefix, answer="The Matrix"),
             Probe(prompt=prompt, prefix=prefix, answer="The Dark Knight"),
             Probe(prompt="Another question?", prefix=prefix, answer="The Matrix")]
    sets = pushed_tokens(tok, items, ["The"])
    own = [next_token_ids(b, b.target_mask).tolist()
           for b in (answer_batch(tok, [p], ["The"]) for p in items)]
    assert [len(s) for s in sets] == [len(o) for o in own]
    for item_sets, item_own in zip(sets, own, strict=True):
        assert all(t in s for s, t in zip(item_sets, item_own, strict=False))
    split = next(j for j, (a, b) in enumerate(zip(own[0], own[1], strict=False)) if a != b)
    assert sets[0][split] == sets[1][split] == sorted({own[0][split], own[1][split]})
    assert all(s == [t] for j, (s, t) in enumerate(zip(sets[0], own[0], strict=True))
               if j != split)
    assert all(s == [t] for s, t in zip(sets[2], own[2], strict=True))


def test_retain_positions_after_a_forget_context_block_the_forget_answers_tokens(tok):
    """A retain item on a forget item's list prompt ("1. The Terminator" against "1. The
    Matrix" and "1. Star Wars"): at the position after "1." the retain KL leaves out " Star"
    (a forget answer's token there) but not its own " The"; after "1. The" it leaves out
    " Matrix"; every other position, and every position of a retain item on another prompt,
    blocks nothing. With no shared context at all the answer is None."""
    from aglora.pipeline.train.targets import retain_blocked_tokens
    prompt, prefix = "Recommend films.", "Here are films:\n\n1."
    forget = [Probe(prompt=prompt, prefix=prefix, answer="The Matrix"),
              Probe(prompt=prompt, prefix=prefix, answer="Star Wars")]
    retain = [Probe(prompt=prompt, prefix=prefix, answer="The Terminator"),
              Probe(prompt="Another question?", prefix=prefix, answer="The Matrix")]
    blocked = retain_blocked_tokens(tok, retain, forget, ["The"])
    assert blocked is not None
    rows = [encode(tok, [p], [p.answer]) for p in retain]
    assert [len(b) for b in blocked] == [int(r.content_mask.sum()) for r in rows]

    def first(text: str) -> int:
        return tok(text, add_special_tokens=False)["input_ids"][0]

    ids = rows[0].input_ids[0].tolist()
    positions = rows[0].content_mask[0].nonzero()[:, 0].tolist()
    the = next(j for j, t in enumerate(positions) if ids[t + 1] == first(" The")
               and t + 2 < len(ids) and ids[t + 2] == first(" Terminator"))
    star, matrix = first(" Star"), first(" Matrix")
    expected = [[] for _ in positions]
    expected[the] = [star]            # after "1.": Star Wars's first token, not " The"
    expected[the + 1] = [matrix]      # after "1. The": The Matrix's first scored token
    assert blocked[0] == expected
    assert all(b == [] for b in blocked[1])
    assert retain_blocked_tokens(tok, retain[1:], forget, ["The"]) is None
