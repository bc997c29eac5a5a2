"""The training loop (aglora.pipeline.train.loop): retain objectives, the batch cycler, lagging
answers and goal weights, frozen weights restored."""

from __future__ import annotations

import pytest
import torch

from aglora.concepts import Probe
from aglora.config import LoraConfig, TrainConfig
from aglora.model.adapter import attach_lora
from aglora.pipeline.train.loop import train
from aglora.pipeline.train.stopping import GoalCheck
from tests.tiny import LORA_FORGET, LORA_RETAIN, make_model, sparse_mask


@pytest.mark.parametrize("retain_objective", ["kl", "nll", "kl+nll"])
def test_retain_objectives_reduce_their_own_loss(tok, retain_objective):
    """With the retain term dominating, training lowers the retain loss it optimises."""
    torch.manual_seed(0)
    pm = attach_lora(make_model(), sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))
    for p in pm.parameters():  # start away from the base so the KL term has something to undo
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.3)
    cfg = TrainConfig(max_steps=12, min_steps=12, lr=1e-2, batch_size=3, check_every=10**6,
                      forget_objective="none", forget_response="refuse",
                      retain_objective=retain_objective,
                      retain_weight=100.0)
    history = train(pm, tok, LORA_FORGET, LORA_RETAIN, cfg, refusals=["film"],
                    log=lambda *_: None).history
    assert history[-1]["retain_loss"] < history[0]["retain_loss"]


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


def test_context_cycler_draws_whole_contexts():
    """Two titles on three list prompts (one item each per prompt) and one description item
    each: a batch of 1 per answer is contexts drawn until two items are in (a prompt, or the
    two descriptions, or one of each); a round covers each context once; a restriction to one
    title's items halves the target and keeps only its items."""
    import random

    from aglora.pipeline.train.loop import ContextCycler
    items = [Probe(prompt=q, prefix="1.", answer=t) for q in ("A?", "B?", "C?")
             for t in ("Heat", "Alien")]
    items += [Probe(prompt="Made in 1995?", answer="Heat"),
              Probe(prompt="Made in 1979?", answer="Alien")]
    contexts = [{0, 1}, {2, 3}, {4, 5}, {6}, {7}]
    cycler = ContextCycler(items, 1, random.Random(0))
    seen: list[set[int]] = []
    while sum(len(c) for c in seen) < len(items):   # one round: every context once
        drawn = cycler.next()
        assert len(drawn) >= 2 and all(set(drawn) & c in (set(), c) for c in contexts)
        assert len(drawn) <= 3 and len(set(drawn)) == len(drawn)
        seen += [c for c in contexts if c <= set(drawn)]
    assert sorted(i for c in seen for i in c) == list(range(len(items)))
    cycler.restrict([1, 3, 5, 7])                     # Alien only: one item a step
    draws = [cycler.next() for _ in range(8)]
    assert all(len(d) == 1 for d in draws) and {d[0] for d in draws} == {1, 3, 5, 7}
    big = ContextCycler(items, 8, random.Random(0))   # 16 wanted, 8 exist: all of them once
    assert sorted(big.next()) == list(range(len(items)))


def _answers(answers: list[str]) -> list[Probe]:
    return [Probe(prompt=f"Question {i}?", answer=a) for i, a in enumerate(answers)]


def test_retain_draw_pairs_each_shared_answer_forget_item():
    """Forget items 0 and 2 answer "Nolan", which retain items 1 and 3 share (any case): a batch
    holding both adds two retain items, the two Nolan ones in turn; item 1 (Zimmer, no retain
    partner) adds none."""
    import random

    from aglora.pipeline.train.loop import Cycler, RetainDraw
    forget = _answers(["Nolan", "Zimmer", "nolan"])
    retain = _answers(["Paris", "Nolan", "Spider", "NOLAN", "Rome"])
    draw = RetainDraw(forget, retain, 2, random.Random(0), pair=True)
    assert draw.paired_forget_items == 2
    batches = [draw.next([0, 1, 2]) for _ in range(3)]
    assert all(len(b) == 4 for b in batches)
    pairs = [i for b in batches for i in b[2:]]
    assert set(pairs) == {1, 3} and sorted(pairs[:2]) == [1, 3]   # each Nolan item in turn
    plain = Cycler(5, 2, random.Random(0))
    fresh = RetainDraw(forget, retain, 2, random.Random(0), pair=True)
    assert fresh.next([1]) == plain.next()       # no shared answer in the batch: no pair
    plain = Cycler(5, 2, random.Random(0))
    off = RetainDraw(forget, retain, 2, random.Random(0), pair=False)
    assert off.paired_forget_items == 0
    assert [off.next([0, 2]) for _ in range(4)] == [plain.next() for _ in range(4)]


def test_pair_shared_answers_feeds_the_retain_term(monkeypatch, tok):
    """The objective's retain term gets the pairs: a forget batch of two shared-answer items
    makes a retain batch of batch_size + 2."""
    import aglora.pipeline.train.objectives as obj_mod
    pm = attach_lora(make_model(seed=1), None, LoraConfig(rank=4, masked=False))
    forget = [Probe(prompt=f"Who made film {i}?", answer="Anna", distractors=["x", "y"])
              for i in range(2)]
    retain = [Probe(prompt="Who wrote book 1?", answer="Anna"),
              Probe(prompt="Capital of France?", answer="Paris"),
              Probe(prompt="Capital of Spain?", answer="Madrid")]
    sizes: list[int] = []
    real = obj_mod.AnswerObjective.retain_loss

    def recording(self, model, r_idx, device):
        sizes.append(len(r_idx))
        return real(self, model, r_idx, device)

    monkeypatch.setattr(obj_mod.AnswerObjective, "retain_loss", recording)
    for pair, expected in ((True, 4), (False, 2)):
        sizes.clear()
        cfg = TrainConfig(max_steps=2, min_steps=1, batch_size=2, check_every=10**6,
                          pair_shared_answers=pair)
        train(pm, tok, forget, retain, cfg, log=lambda *_: None)
        assert sizes == [expected, expected]


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

    def fake_goal(self, model, tok, confirm=True):
        return GoalCheck(False, 0.5, 1.0, {"Anna"}, {0, 1, 2})

    seen: list[list[str]] = []
    real_batch = obj_mod.answer_batch

    def recording(tok, items, *rest):
        seen.append([p.answer for p in items])
        return real_batch(tok, items, *rest)

    monkeypatch.setattr(train_mod.GoalChecker, "check", fake_goal)
    monkeypatch.setattr(obj_mod, "answer_batch", recording)
    cfg = TC(max_steps=4, batch_size=4, check_every=1, focus_lagging_answers=True,
             retain_objective="none")
    train_mod.train(pm, tok, forget, [], cfg)
    assert {"Anna", "Bob"} <= set(seen[0])                  # before the first check: both
    assert all(set(b) == {"Bob"} for b in seen[2:])         # after it: only the lagging one


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
    monkeypatch.setattr(train_mod.GoalChecker, "check", lambda *a: GoalCheck(
        False, 0.5, 1.0, {"Anna"}, {0, 1, 2}))
    answers: list[list[str]] = []
    weights: list[list[float]] = []
    real_batch, real_npo = obj_mod.answer_batch, obj_mod.npo_loss

    def recording_batch(tok, items, *rest):
        answers.append([p.answer for p in items])
        return real_batch(tok, items, *rest)

    def recording_npo(logp, ref, beta, weight=None):
        weights.append(weight.tolist())
        return real_npo(logp, ref, beta, weight)

    monkeypatch.setattr(obj_mod, "answer_batch", recording_batch)
    monkeypatch.setattr(obj_mod, "npo_loss", recording_npo)
    cfg = TC(max_steps=4, batch_size=4, check_every=1, forget_weight_at_goal=0.1,
             retain_objective="none")
    result = train_mod.train(pm, tok, forget, [], cfg)
    assert weights[0] == [1.0] * 4
    for names, ws in zip(answers[1:], weights[1:], strict=True):
        assert ws == [pytest.approx(0.1) if a == "Anna" else 1.0 for a in names]
    assert result.history[0]["forget_items_at_goal"] == 3


def test_unfrozen_restores_eval_mode_and_frozen_weights_even_on_error():
    from aglora.pipeline.train.loop import unfrozen
    model = make_model()
    model.eval()
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"), unfrozen(model, params):
        assert model.training and all(p.requires_grad for p in params)
        model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
        assert params[0].grad is not None
        raise RuntimeError("boom")
    assert not model.training
    assert not any(p.requires_grad for p in params)
    assert all(p.grad is None for p in params)


def _refusal_stop_run(monkeypatch, tok, response: str, shares: list[float]):
    """A run whose likelihood check is at the goal from the first check on, with the refusal
    check's shares given in order."""
    import aglora.pipeline.train.loop as train_mod
    pm = attach_lora(make_model(seed=1), None, LoraConfig(rank=4, masked=False))
    forget = [Probe(prompt=f"Who made film {i}?", answer="Anna", distractors=["x", "y", "z"])
              for i in range(3)]
    forget.append(Probe(prompt="Film 3 was made by", answer="Anna", format="completion",
                        distractors=["x", "y", "z"]))
    monkeypatch.setattr(train_mod.GoalChecker, "check", lambda *a: GoalCheck(
        True, 0.0, -1.0, {"Anna"}, {0, 1, 2, 3}))
    asked: list[list[str]] = []
    pending = list(shares)

    def fake_share(model, tok, items, phrases):
        asked.append([p.format for p in items])
        return pending.pop(0)

    monkeypatch.setattr(train_mod, "refusal_share", fake_share)
    cfg = TrainConfig(max_steps=10, min_steps=1, batch_size=4, check_every=1,
                      retain_objective="none", forget_response=response, stop_refusal_share=0.8)
    return train(pm, tok, forget, [], cfg, refusals=["I don't know."]), asked


def test_refuse_stops_only_once_the_refusal_share_is_reached(monkeypatch, tok):
    result, asked = _refusal_stop_run(monkeypatch, tok, "refuse", [0.2, 0.5, 0.8, 1.0])
    assert result.steps == 3 and result.stopped_early
    assert "refusals" in result.stop_reason
    assert [row["refusal_share"] for row in result.history] == [0.2, 0.5, 0.8]
    assert all(formats == ["chat"] * 3 for formats in asked)   # chat questions only


def test_suppress_never_runs_the_refusal_check(monkeypatch, tok):
    result, asked = _refusal_stop_run(monkeypatch, tok, "suppress", [0.0])
    assert result.steps == 1 and result.stop_reason == "forget items at the goal"
    assert asked == [] and "refusal_share" not in result.history[0]


def test_progress_line_names_the_lagging_answers_worst_first():
    from aglora.pipeline.train.loop import progress_line
    row = {"step": 8, "loss": 0.5, "forget_loss": 0.4, "retain_loss": 0.01,
           "train_forget_accuracy": 0.3, "train_forget_margin": -0.2, "check_answers_at_goal": 1,
           "check_answer_accuracy": {"A": 0.0, "B": 0.25, "C": 0.5, "D": 0.75, "E": 0.25},
           "check_lagging_answers": ["B", "C", "D", "E"]}
    line = progress_line(row)
    assert line.endswith(" answers at the goal 1/5, lagging: D 0.75, C 0.50, B 0.25, …")
    row["check_lagging_answers"] = []
    assert progress_line(row).endswith(" answers at the goal 5/5")


def test_a_check_over_several_answers_records_each_answers_accuracy(monkeypatch, tok):
    """Two answers: the check row keeps each one's accuracy and the ones not at the goal."""
    import aglora.pipeline.train.loop as train_mod
    pm = attach_lora(make_model(seed=1), None, LoraConfig(rank=4, masked=False))
    forget = [Probe(prompt=f"Who made film {i}?", answer=a, distractors=["x", "y", "z"])
              for i, a in enumerate(["Anna", "Anna", "Bob", "Bob"])]
    monkeypatch.setattr(train_mod.GoalChecker, "check", lambda *a: GoalCheck(
        False, 0.5, 1.0, {"Anna"}, {0, 1}, 4, {"Anna": 0.0, "Bob": 1.0}))
    cfg = TrainConfig(max_steps=4, min_steps=1, batch_size=2, check_every=4,
                      retain_objective="none")
    row = train(pm, tok, forget, [], cfg).history[-1]
    assert row["check_answer_accuracy"] == {"Anna": 0.0, "Bob": 1.0}
    assert row["check_lagging_answers"] == ["Bob"]
