"""Early stopping (aglora.pipeline.train.stopping): the forget goal, averaged or per answer."""

from __future__ import annotations

import pytest

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
    assert check.answer_accuracy == {"A": 0.0, "B": 1.0}


def _ban_items(titles: list[str], n_prompts: int) -> list[Probe]:
    """A ban's forget items: one per title and prompt, the prompt's distractors shared."""
    return [Probe(prompt=f"Recommend a film, request {r}.", prefix="1.", answer=t,
                  distractors=["Alien", "Heat", "Jaws"], family="recommendation")
            for r in range(n_prompts) for t in titles]


def test_check_subset_takes_the_same_contexts_for_every_answer():
    from aglora.pipeline.train.stopping import check_subset
    items = _ban_items(["A", "B", "C"], 10)
    assert check_subset(items, 0, 0) == list(range(30))
    chosen = check_subset(items, 4, 0)
    by_answer: dict[str, set[str]] = {}
    for i in chosen:
        by_answer.setdefault(items[i].answer, set()).add(items[i].prompt)
    assert sorted(by_answer) == ["A", "B", "C"]
    assert all(len(p) == 4 for p in by_answer.values())
    assert by_answer["A"] == by_answer["B"] == by_answer["C"]  # shared contexts
    assert check_subset(items, 4, 0) == chosen and check_subset(items, 4, 1) != chosen
    assert check_subset(items, 99, 0) == list(range(30))


def test_incremental_check_rescores_lagging_answers_and_confirms_before_a_stop():
    """A reaches the goal first and is not rescored; when B gets there too, A is rescored (the
    confirm): A climbed back, so no stop; at the next check both are, and it stops."""
    from aglora.pipeline.train.stopping import GoalChecker
    items = _ban_items(["A", "B"], 2)  # A0 B0 A1 B1
    wrong, right = [-2.0, -1.0, -3.0, -3.0], [-1.0, -2.0, -3.0, -3.0]
    state = {"A": right, "B": right}
    asked: list[list[str]] = []

    def scorer(model, tok, batch):
        asked.append([p.answer for p in batch])
        return [state[p.answer] for p in batch]

    cfg = TrainConfig(stop_margin=10.0, stop_each_answer=True, stop_accuracy=0.25,
                      check_incremental=True)
    checker = GoalChecker(items, cfg, 0.25, scorer)
    assert not checker.check(None, None).met and asked[-1] == ["A", "B", "A", "B"]
    state["A"] = wrong
    check = checker.check(None, None)
    assert not check.met and check.answers_at_goal == {"A"} and check.scored == 4
    state["A"], state["B"] = right, wrong  # A climbs back unseen; B gets there
    asked.clear()
    check = checker.check(None, None)
    assert asked == [["B", "B"], ["A", "A"]]  # the lagging answer, then the confirm
    assert not check.met and check.answers_at_goal == {"B"} and check.scored == 4
    state["A"] = wrong
    asked.clear()
    check = checker.check(None, None)
    assert asked == [["A", "A"], ["B", "B"]] and check.met
    # without check_incremental every check scores every item
    plain = GoalChecker(items, TrainConfig(stop_margin=10.0, stop_each_answer=True,
                                           stop_accuracy=0.25), 0.25, scorer)
    asked.clear()
    plain.check(None, None)
    plain.check(None, None)
    assert asked == [["A", "B", "A", "B"]] * 2


def test_incremental_check_is_off_where_items_are_read_between_checks():
    from aglora.pipeline.train.stopping import incremental_applies
    on = TrainConfig(stop_each_answer=True, check_incremental=True)
    assert incremental_applies(on)
    assert not incremental_applies(TrainConfig(check_incremental=True))  # the averaged rule
    for extra in ({"focus_lagging_answers": True}, {"forget_weight_at_goal": 0.5},
                  {"stop_each_form": True}):
        assert not incremental_applies(TrainConfig(stop_each_answer=True,
                                                   check_incremental=True, **extra))


def _tiny_ban() -> list[Probe]:
    """Forget items on the tiny model (seed 3) whose answers beat their distractors by a few
    tenths of a nat at base (single-token options): four answers on twelve prompts, the
    distractors rotating over the prompts, so that the items reach the goal at different steps."""
    import itertools
    answers = ["Denis", "James", "capital", "Japan"]
    low = ["directed", "The", "Inception", "Titanic", "Cameron", "a", "is", "user", "of", "by"]
    combos = list(itertools.combinations(low, 3))
    words = ["dreams", "Paris", "France", "Tokyo", "Nolan", "Cameron", "Spielberg", "Scott",
             "tiny", "model", "question", "answer"]
    return [Probe(prompt=f"I liked {words[r]}. Recommend a film.", prefix="1.", answer=t,
                  distractors=list(combos[(7 * r + 3 * j) % len(combos)]),
                  family="recommendation")
            for r in range(len(words)) for j, t in enumerate(answers)]


def _train_tiny_ban(tok, **train):
    import torch

    from aglora.config import LoraConfig
    from aglora.model.adapter import attach_lora
    from aglora.pipeline.train.loop import train as run_train
    from tests.tiny import make_model
    torch.manual_seed(0)
    pm = attach_lora(make_model(seed=3), None, LoraConfig(rank=4, masked=False))
    cfg = TrainConfig(lr=1e-2, batch_size=4, max_steps=40, min_steps=1, check_every=1,
                      stop_each_answer=True, stop_accuracy=0.125, **train)
    retain = [Probe(prompt="Who directed Titanic?", prefix="It was directed by",
                    answer="James Cameron")]
    result = run_train(pm, tok, _tiny_ban(), retain, cfg, log=lambda *_: None)
    weights = torch.cat([p.detach().flatten() for n, p in pm.named_parameters() if "lora" in n])
    return result, weights


def test_cheaper_checks_agree_with_the_full_check_on_a_tiny_model(tok):
    """The incremental check stops at the full check's step with the same adapter, scoring
    fewer items; a subset of 3 items per answer stops within one check of it, where the full
    check (run once at the end) is at the goal too."""
    import torch
    full, w_full = _train_tiny_ban(tok)
    assert full.stopped_early and 3 <= full.steps < 40  # the items cross the goal in training
    inc, w_inc = _train_tiny_ban(tok, check_incremental=True)
    assert inc.steps == full.steps and torch.equal(w_inc, w_full)
    scored = [sum(h.get("check_items", 0) for h in r.history) for r in (full, inc)]
    assert scored[1] < scored[0]
    sub, _ = _train_tiny_ban(tok, check_incremental=True, check_items_per_answer=3,
                             check_final_full=True)
    assert abs(sub.steps - full.steps) <= 1
    assert sub.final_check["met"] and sub.final_check["items"] == len(_tiny_ban())
    assert max(h.get("check_items", 0) for h in sub.history) == 4 * 3
    assert 0 < sub.check_seconds < sub.seconds and sub.step_seconds > 0
    assert all("check_seconds" in h for h in sub.history)


def test_refusal_share_counts_refusals_among_the_chat_answers(monkeypatch, tok):
    import aglora.pipeline.train.stopping as stopping
    from aglora.concepts import Probe
    items = [Probe(prompt="Q1?", answer="a"), Probe(prompt="Q2?", answer="a"),
             Probe(prompt="Q3", answer="a", format="completion"), Probe(prompt="Q4?", answer="a")]
    texts = {"Q1?": "I'm not sure I know that one.", "Q2?": "It was Nolan.",
             "Q4?": "Zorblat, obviously."}
    seen = []

    def fake_generate(model, tok, probes, n_samples, max_new_tokens, batch_size):
        seen.append((n_samples, [p.prompt for p in probes]))
        return [[texts[p.prompt]] for p in probes]

    monkeypatch.setattr(stopping, "generate", fake_generate)
    assert stopping.refusal_share(None, tok, items, []) == pytest.approx(1 / 3)
    assert stopping.refusal_share(None, tok, items, ["Zorblat"]) == pytest.approx(2 / 3)
    assert seen[0] == (0, ["Q1?", "Q2?", "Q4?"])           # greedy only, chat items only
    assert stopping.refusal_share(None, tok, items[2:3], []) is None


def test_refusal_share_on_a_tiny_model_generates_one_answer_per_chat_item(tok):
    from aglora.pipeline.train.stopping import refusal_share
    from tests.tiny import LORA_FORGET, LORA_RETAIN, make_model
    items = LORA_FORGET + LORA_RETAIN
    share = refusal_share(make_model(), tok, items, [])
    chat = [p for p in items if p.format == "chat"]
    assert chat and share is not None
    assert share * len(chat) == pytest.approx(round(share * len(chat)))   # a count of answers
