"""Early stopping (aglora.pipeline.train.stopping): the forget goal, averaged or per answer."""

from __future__ import annotations

from aglora.concepts import Probe
from aglora.config import TrainConfig


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
