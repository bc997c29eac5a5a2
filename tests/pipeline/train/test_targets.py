"""The forget target: leading words listed in `train.forget_skip_leading` are moved into the
context, so NPO / gradient ascent push down only the words that make the answer."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import make_model

from aglora.concepts import Probe
from aglora.config import TrainConfig, load_config
from aglora.errors import AgloraError
from aglora.model.forward import target_logprobs
from aglora.model.tokens import encode
from aglora.pipeline.train.stopping import GoalCheck
from aglora.pipeline.train.targets import answer_batch, split_leading_words


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
    from aglora.pipeline.train.reference import blocked_distribution
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    target = blocked_distribution(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(target, torch.tensor([[0.0, 0.5, 0.5], [0.25, 0.0, 0.75]]))


def test_others_kl_ignores_the_answer_logit_and_is_zero_at_the_base():
    from aglora.pipeline.train.objectives import others_kl_loss
    from aglora.pipeline.train.reference import blocked_distribution
    base = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]))
    answer = torch.tensor([0, 1])
    target = blocked_distribution(base, answer)
    assert float(others_kl_loss(base, answer, target)) == pytest.approx(0.0, abs=1e-6)
    lowered = base.clone()
    lowered[0, 0] -= 7.0  # only the answers' logits move
    lowered[1, 1] += 3.0
    assert float(others_kl_loss(lowered, answer, target)) == pytest.approx(0.0, abs=1e-6)
    # another token moves: row 0's others become (0.2, 0.8) against (0.5, 0.5)
    shifted = torch.log(torch.tensor([[0.5, 0.1, 0.4], [0.1, 0.6, 0.3]]))
    expected = (0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)) / 2
    assert float(others_kl_loss(shifted, answer, target)) == pytest.approx(expected, abs=1e-6)


def test_others_kl_term_in_training(tok):
    """Step 1 scores the base model, where the term is 0: the logged forget loss is NPO's
    log 4 (= -(2/beta) log sigmoid(0) at beta 1); with the term, other tokens at the answer
    positions move less than without it."""
    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.model.forward import logits_at, next_token_ids
    from aglora.pipeline.train.loop import train
    from aglora.pipeline.train.objectives import others_kl_loss
    from aglora.pipeline.train.reference import blocked_distribution
    forget = [Probe(prompt="Tell me a fact.", prefix="Fact:", answer="The capital of France")]
    batch = answer_batch(tok, forget, ["The"])
    drift = {}
    for weight in (0.0, 10.0):
        model = make_model(seed=1)
        pm = attach_lora(model, None, LoraConfig(rank=4, masked=False))
        answer = next_token_ids(batch, batch.target_mask)
        with torch.no_grad():
            target = blocked_distribution(logits_at(pm, batch, batch.target_mask), answer)
        cfg = TrainConfig(forget_objective="npo", npo_beta=1.0, forget_others_kl=weight,
                          forget_skip_leading=["The"], lr=5e-2, max_steps=6, min_steps=6,
                          batch_size=1, check_every=10**6)
        result = train(pm, tok, forget, [], cfg, log=lambda *_: None)
        assert result.history[0]["forget_loss"] == pytest.approx(2 * math.log(2), rel=1e-5)
        with torch.no_grad():
            drift[weight] = float(others_kl_loss(logits_at(pm, batch, batch.target_mask),
                                                 answer, target))
    assert drift[10.0] < drift[0.0]


def test_stop_each_answer_needs_every_answer_at_the_goal(monkeypatch):
    """Overall accuracy 0.25 (at chance) but answer B still at 0.5: the averaged rule stops,
    the per-answer rule does not; once B is at chance too, both stop."""
    import aglora.pipeline.train.stopping as train_mod
    items = [Probe(prompt=f"q{i}", answer=a, distractors=["x", "y", "z"])
             for i, a in enumerate(["A", "A", "A", "A", "B", "B"])]
    wrong, right = [-2.0, -1.0, -3.0, -3.0], [-1.0, -2.0, -3.0, -3.0]  # answer score first
    rows = [wrong, wrong, wrong, wrong, right, wrong]  # A 0/4, B 1/2: overall 1/6
    monkeypatch.setattr(train_mod, "score_options", lambda *a, **k: rows)
    averaged = TrainConfig(stop_margin=10.0)
    per_answer = TrainConfig(stop_margin=10.0, stop_each_answer=True)
    assert train_mod.forget_goal_met(None, None, items, averaged, 0.25)[0]
    assert not train_mod.forget_goal_met(None, None, items, per_answer, 0.25)[0]
    rows[4] = wrong
    assert train_mod.forget_goal_met(None, None, items, per_answer, 0.25)[0]


def test_goal_check_names_the_answers_at_the_goal(monkeypatch):
    import aglora.pipeline.train.stopping as train_mod
    items = [Probe(prompt=f"q{i}", answer=a, distractors=["x", "y", "z"])
             for i, a in enumerate(["A", "A", "B", "B"])]
    wrong, right = [-2.0, -1.0, -3.0, -3.0], [-1.0, -2.0, -3.0, -3.0]
    monkeypatch.setattr(train_mod, "score_options", lambda *a, **k: [wrong, wrong, right, right])
    check = train_mod.forget_goal_met(None, None, items, TrainConfig(), 0.25)
    assert check.answers_at_goal == {"A"} and check.accuracy == 0.5 and not check.met
    assert check.items_at_goal == {0, 1}  # the items whose answer no longer wins


def test_cycler_restricted_to_a_subset():
    import random

    from aglora.pipeline.train.loop import Cycler
    cycler = Cycler(6, 4, random.Random(0))
    first = cycler.next()
    assert len(set(first)) == 4
    cycler.restrict([1, 4])
    drawn = [i for _ in range(5) for i in cycler.next()]
    assert set(drawn) == {1, 4} and len(drawn) == 10   # a batch is at most the subset's size
    cycler.restrict(list(range(6)))
    assert len(cycler.next()) == 4


def test_focus_lagging_answers_trains_only_the_lagging_answer(monkeypatch, tok):
    """Answer A is at the goal from the first check on: later forget batches hold only B."""
    import aglora.pipeline.train.loop as train_mod
    import aglora.pipeline.train.objectives as obj_mod
    from aglora.config import LoraConfig
    from aglora.config import TrainConfig as TC
    from aglora.model.adapter import attach_lora
    pm = attach_lora(make_model(seed=1), None, LoraConfig(rank=4, masked=False))
    forget = [Probe(prompt=f"Who made film {i}?", answer=a, distractors=["x", "y", "z"])
              for i, a in enumerate(["Anna", "Anna", "Anna", "Bob", "Bob", "Bob"])]

    def fake_goal(model, tok, items, cfg, chance):
        return GoalCheck(False, 0.5, 1.0, {"Anna"}, {0, 1, 2})

    seen: list[list[str]] = []
    real_batch = obj_mod.forget_batch

    def recording(tok, items, *rest):
        seen.append([p.answer for p in items])
        return real_batch(tok, items, *rest)

    monkeypatch.setattr(train_mod, "forget_goal_met", fake_goal)
    monkeypatch.setattr(obj_mod, "forget_batch", recording)
    cfg = TC(max_steps=4, batch_size=4, check_every=1, focus_lagging_answers=True,
             retain_objective="none")
    train_mod.train(pm, tok, forget, [], cfg)
    assert {"Anna", "Bob"} <= set(seen[0])                  # before the first check: both
    assert all(set(b) == {"Bob"} for b in seen[2:])         # after it: only the lagging one


def test_npo_and_grad_ascent_weights_scale_each_item():
    from aglora.pipeline.train.objectives import grad_ascent_loss, npo_loss
    logp, ref = torch.tensor([-1.0, -5.0]), torch.tensor([-2.0, -2.0])
    each = [float(npo_loss(logp[i:i + 1], ref[i:i + 1], 0.5)) for i in range(2)]
    w = torch.tensor([1.0, 0.25])
    assert float(npo_loss(logp, ref, 0.5, w)) == pytest.approx((each[0] + 0.25 * each[1]) / 2)
    n = torch.tensor([2, 1])
    assert float(grad_ascent_loss(logp, n, w)) == pytest.approx((-0.5 - 5.0 * 0.25) / 2)
    assert float(npo_loss(logp, ref, 0.5, torch.ones(2))) == pytest.approx(
        float(npo_loss(logp, ref, 0.5)))
    with pytest.raises(AgloraError, match="forget_weight_at_goal=-1.0: must be 0 or more"):
        TrainConfig(forget_weight_at_goal=-1.0)


def test_forget_items_at_the_goal_get_their_weight_after_a_check(monkeypatch, tok):
    """Items 0-2 (Anna) are at the goal from the first check on: their NPO weight becomes 0.1,
    Bob's stays 1; before the first check every item weighs 1."""
    import aglora.pipeline.train.loop as train_mod
    import aglora.pipeline.train.objectives as obj_mod
    from aglora.config import LoraConfig
    from aglora.config import TrainConfig as TC
    from aglora.model.adapter import attach_lora
    pm = attach_lora(make_model(seed=1), None, LoraConfig(rank=4, masked=False))
    forget = [Probe(prompt=f"Who made film {i}?", answer=a, distractors=["x", "y", "z"])
              for i, a in enumerate(["Anna", "Anna", "Anna", "Bob", "Bob", "Bob"])]
    monkeypatch.setattr(train_mod, "forget_goal_met", lambda *a: GoalCheck(
        False, 0.5, 1.0, {"Anna"}, {0, 1, 2}))
    answers: list[list[str]] = []
    weights: list[list[float]] = []
    real_batch, real_npo = obj_mod.forget_batch, obj_mod.npo_loss

    def recording_batch(tok, items, *rest):
        answers.append([p.answer for p in items])
        return real_batch(tok, items, *rest)

    def recording_npo(logp, ref, beta, weight=None):
        weights.append(weight.tolist())
        return real_npo(logp, ref, beta, weight)

    monkeypatch.setattr(obj_mod, "forget_batch", recording_batch)
    monkeypatch.setattr(obj_mod, "npo_loss", recording_npo)
    cfg = TC(max_steps=4, batch_size=4, check_every=1, forget_weight_at_goal=0.1,
             retain_objective="none")
    result = train_mod.train(pm, tok, forget, [], cfg)
    assert weights[0] == [1.0] * 4
    for names, ws in zip(answers[1:], weights[1:], strict=True):
        assert ws == [pytest.approx(0.1) if a == "Anna" else 1.0 for a in names]
    assert result.history[0]["forget_items_at_goal"] == 3
