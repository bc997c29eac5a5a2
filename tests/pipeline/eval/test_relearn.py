"""The relearning attacks (aglora.pipeline.eval.relearn): the recovered share on hand numbers, the
seeded attack split, the whole attack on a tiny model with planted facts, checked against what
score_options says of the same model states; the curve against separate fine-tunes; the benign
attack's training set."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from aglora.concepts import Probe
from aglora.model.forward import target_logprobs
from aglora.model.likelihood import score_options
from aglora.model.tokens import encode
from aglora.pipeline.eval import relearn
from aglora.pipeline.eval.relearn import (
    Finetune,
    benign_attack,
    benign_set,
    curve_point,
    finetune,
    recovered_share,
    relearn_attack,
    relearn_from_records,
    split_attack_set,
)
from tests.tiny import make_model, make_tokenizer


# ---- the recovered share and the attack split by hand -------------------------------------------
def test_recovered_share_by_hand():
    assert recovered_share(1.0, 0.2, 0.58) == pytest.approx(0.475)  # 0.38 of a 0.8 gap
    assert recovered_share(1.0, 0.2, 0.2) == 0.0                    # nothing came back
    assert recovered_share(1.0, 0.2, 1.0) == pytest.approx(1.0)     # all the way to the base
    assert recovered_share(1.0, 0.0, 0.25) == pytest.approx(0.25)
    assert recovered_share(0.9, 0.3, 0.15) == pytest.approx(-0.25)  # the attack made it worse
    # margins (nats) work the same way: base 6, after -2, relearned 4 -> 6 of 8 back
    assert recovered_share(6.0, -2.0, 4.0) == pytest.approx(0.75)
    assert math.isnan(recovered_share(0.5, 0.5, 0.9))               # no gap: no share
    assert math.isnan(recovered_share(1.0, 1.0 - 1e-12, 1.0))


def test_split_attack_set_is_a_seeded_quarter():
    known = list(range(10, 18))  # 8 base-known probe indices
    train, held = split_attack_set(known, seed=0)
    assert len(train) == 2 and len(held) == 6  # a quarter, the rest held out
    assert not set(train) & set(held) and sorted(train + held) == known
    assert known == list(range(10, 18))  # the caller's list is not shuffled in place
    # seeded: the same seed gives the same split, the seed's own shuffle of the list
    assert split_attack_set(known, seed=0) == (train, held)
    shuffled = list(known)
    random.Random(0).shuffle(shuffled)
    assert (train, held) == (shuffled[:2], shuffled[2:])
    assert split_attack_set(known, seed=1) != (train, held)
    # at least one item to relearn on; the rest (possibly nothing) held out
    for n, n_train in ((1, 1), (2, 1), (3, 1), (4, 1), (7, 1), (9, 2), (12, 3), (40, 10)):
        train, held = split_attack_set(list(range(n)), seed=3)
        assert len(train) == n_train and len(held) == n - n_train, n
        assert not set(train) & set(held) and sorted(train + held) == list(range(n))
    assert split_attack_set([], seed=0) == ([], [])


# ---- planted facts on a tiny model ------------------------------------------------------------
DIRECTORS = ["Christopher Nolan", "Denis Villeneuve", "James Cameron", "Ridley Scott",
             "Steven Spielberg"]


def _fact(film: str, director: str, split: str = "forget") -> Probe:
    return Probe(prompt=f"Who directed {film}?", prefix=f"{film} was directed by",
                 answer=director, distractors=[d for d in DIRECTORS if d != director][:3],
                 split=split, id=f"{split}-{film}")


NOLAN = [_fact(f, "Christopher Nolan")
         for f in ("Inception", "Interstellar", "Memento", "Tenet", "Dunkirk", "Oppenheimer")]
VILLENEUVE = [_fact(f, "Denis Villeneuve") for f in ("Dune", "Arrival", "Sicario")]
NEIGHBOURS = [_fact(f, d, "neighbor") for f, d in (
    ("Titanic", "James Cameron"), ("Avatar", "James Cameron"), ("Alien", "Ridley Scott"),
    ("Gladiator", "Ridley Scott"), ("Jaws", "Steven Spielberg"), ("Hook", "Steven Spielberg"))]
# Two forget probes the attack must leave out: one the base model gets wrong (a false fact, never
# planted) and one without options.
NOT_KNOWN = _fact("Inception", "Ridley Scott")
NO_CHOICE = Probe(prompt="Who directed Tenet?", answer="Christopher Nolan", split="forget")
PROBES = NOLAN + VILLENEUVE + [NOT_KNOWN, NO_CHOICE] + NEIGHBOURS
KNOWN = list(range(9))  # the planted forget facts: Nolan's six films, then Villeneuve's three


def _tune(model, tok, items: list[Probe], steps: int, lr: float,
          ascend: list[Probe] | None = None) -> torch.nn.Module:
    """Full-parameter AdamW: descend the mean per-token answer NLL of `items`, ascend it on
    `ascend` (gradient difference); in place, frozen and in eval mode after."""
    torch.manual_seed(0)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    down = encode(tok, items, [p.answer for p in items])
    up = encode(tok, ascend, [p.answer for p in ascend]) if ascend else None
    for _ in range(steps):
        loss = -(target_logprobs(model, down) / down.target_mask.sum(-1)).mean()
        if up is not None:
            loss = loss + (target_logprobs(model, up) / up.target_mask.sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return model


def _correct(scores: list[float]) -> bool:
    return scores[0] > max(scores[1:])


def _accuracy(rows: list[list[float]]) -> float:
    return sum(_correct(s) for s in rows) / len(rows)


def _margin(rows: list[list[float]]) -> float:
    return sum(s[0] - max(s[1:]) for s in rows) / len(rows)


@pytest.fixture(scope="module")
def planted():
    """(tok, base: knows every planted fact, unlearned: gradient difference forgot Nolan's films
    but kept Villeneuve's and the neighbours, their option scores of PROBES)."""
    tok = make_tokenizer()
    base = _tune(make_model(), tok, NOLAN + VILLENEUVE + NEIGHBOURS, steps=120, lr=1e-2)
    unlearned = _tune(copy.deepcopy(base), tok, VILLENEUVE + NEIGHBOURS, steps=5, lr=3e-3,
                      ascend=NOLAN)
    return tok, base, unlearned, score_options(base, tok, PROBES), score_options(
        unlearned, tok, PROBES)


def test_the_planted_case_is_what_it_claims(planted):
    _, _, _, base_scores, after_scores = planted
    forget = [i for i, p in enumerate(PROBES) if p.split == "forget"]
    assert [i for i in forget if base_scores[i] and _correct(base_scores[i])] == KNOWN
    assert base_scores[PROBES.index(NO_CHOICE)] == []
    assert all(_correct(base_scores[i]) for i, p in enumerate(PROBES) if p.split == "neighbor")
    # unlearned: Nolan's films forgotten, Villeneuve's still known, both clearly
    assert all(after_scores[i][0] - max(after_scores[i][1:]) < -0.5 for i in range(6))
    assert all(after_scores[i][0] - max(after_scores[i][1:]) > 2.0 for i in range(6, 9))


def test_relearning_brings_the_held_out_facts_back(planted):
    tok, _, unlearned, base_scores, after_scores = planted
    attacked = copy.deepcopy(unlearned)
    out = relearn_attack(attacked, tok, PROBES, base_scores, after_scores, steps=5, lr=1e-2,
                         batch_size=4, seed=0)
    train, held = split_attack_set(KNOWN, seed=0)
    assert train == [7, 5]  # Villeneuve's Arrival, Nolan's Oppenheimer; 5 + 2 of theirs held out
    assert (out["steps"], out["lr"], out["n_train"], out["n_held"]) == (5, 1e-2, 2, 7)
    # by hand: base and after from the given scores, relearned from the attacked model itself
    base_acc = _accuracy([base_scores[i] for i in held])
    after_acc = _accuracy([after_scores[i] for i in held])
    relearned = score_options(attacked, tok, [PROBES[i] for i in held])
    rel_acc = _accuracy(relearned)
    assert base_acc == 1.0 and after_acc == pytest.approx(2 / 7)  # Villeneuve's two held out
    assert out["known_accuracy"] == pytest.approx(
        {"base": base_acc, "after": after_acc, "relearned": rel_acc})
    assert out["margin"] == pytest.approx(
        {"base": _margin([base_scores[i] for i in held]),
         "after": _margin([after_scores[i] for i in held]), "relearned": _margin(relearned)},
        rel=1e-5, abs=1e-5)
    assert out["recovered_share"] == pytest.approx((rel_acc - after_acc) / (base_acc - after_acc))
    m = out["margin"]
    assert out["recovered_share_margin"] == pytest.approx(
        (m["relearned"] - m["after"]) / (m["base"] - m["after"]))
    # the attack clearly worked: the forgotten held-out facts came back
    assert out["recovered_share"] >= 0.75 and out["recovered_share_margin"] >= 0.5
    assert not attacked.training and not any(p.requires_grad for p in attacked.parameters())


def test_no_attack_steps_recover_nothing(planted):
    tok, _, unlearned, base_scores, after_scores = planted
    attacked = copy.deepcopy(unlearned)
    out = relearn_attack(attacked, tok, PROBES, base_scores, after_scores, steps=0, lr=1e-2)
    assert out["known_accuracy"]["relearned"] == out["known_accuracy"]["after"]
    assert out["recovered_share"] == 0.0
    assert out["recovered_share_margin"] == pytest.approx(0.0, abs=1e-5)
    for a, b in zip(attacked.parameters(), unlearned.parameters(), strict=True):
        assert torch.equal(a, b)


def test_finetune_changes_the_model_in_place_and_freezes_it(planted):
    tok, _, unlearned, _, _ = planted
    attacked = copy.deepcopy(unlearned)
    facts = [NOLAN[0]]
    with torch.no_grad():
        before = float(target_logprobs(attacked, encode(tok, facts, [NOLAN[0].answer])))
    finetune(attacked, tok, facts, steps=3, lr=1e-2, batch_size=2)
    with torch.no_grad():
        after = float(target_logprobs(attacked, encode(tok, facts, [NOLAN[0].answer])))
    assert after > before + 1.0
    assert not attacked.training and not any(p.requires_grad for p in attacked.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(attacked.parameters(),
                                                     unlearned.parameters(), strict=True))


def test_relearn_from_records_attacks_a_copy(planted):
    tok, _, unlearned, base_scores, after_scores = planted
    records = [{"base_scores": b, "after_scores": a}
               for b, a in zip(base_scores, after_scores, strict=True)]
    before = [p.clone() for p in unlearned.parameters()]
    out = relearn_from_records(unlearned, tok, PROBES, records, steps=2, seed=0)
    want = relearn_attack(copy.deepcopy(unlearned), tok, PROBES, base_scores, after_scores,
                          steps=2, seed=0)
    assert out == want  # the default learning rate, on a copy
    assert all(torch.equal(a, b) for a, b in zip(before, unlearned.parameters(), strict=True))


def test_too_few_known_facts_is_reported_not_attacked(planted):
    tok, _, unlearned, base_scores, after_scores = planted
    one = [NOLAN[0], NOT_KNOWN] + NEIGHBOURS  # one base-known forget fact: none to hold out
    scores = [base_scores[PROBES.index(p)] for p in one]
    after = [after_scores[PROBES.index(p)] for p in one]
    out = relearn_attack(copy.deepcopy(unlearned), tok, one, scores, after, steps=3)
    assert out == {"steps": 3, "error": "too few base-known forget probes for the attack"}


# ---- the curve: one continued fine-tune, scored at each checkpoint ------------------------------
def test_curve_point_by_hand():
    # two held-out facts: [answer, distractors...]; the first right by 1 nat, the second wrong by 2
    scores = [[-1.0, -2.0, -3.0], [-4.0, -2.0, -5.0]]
    p = curve_point(5, base=(1.0, 3.0), after=(0.0, -3.0), scores=scores)
    assert p == {"steps": 5, "known_accuracy": 0.5, "margin": -0.5,
                 "recovered_share": 0.5,             # 0.5 of a gap of 1.0
                 "recovered_share_margin": 2.5 / 6}  # -0.5 is 2.5 nats above -3, of 6


def test_continued_finetune_equals_one_of_as_many_steps(planted):
    tok, _, unlearned, _, _ = planted
    facts = NOLAN[:3]
    paused, straight = copy.deepcopy(unlearned), copy.deepcopy(unlearned)
    run = Finetune(paused, tok, facts, lr=1e-2, batch_size=2, seed=0)
    run.advance_to(5)
    score_options(paused, tok, PROBES)  # scoring in between changes nothing
    run.advance_to(10)                  # 5 more steps, the same optimiser
    run.close()
    finetune(straight, tok, facts, steps=10, lr=1e-2, batch_size=2, seed=0)
    for a, b in zip(paused.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)  # bit for bit, not within a tolerance
    assert not paused.training and not any(p.requires_grad for p in paused.parameters())


def test_curve_checkpoints_equal_separate_finetunes(planted):
    tok, _, unlearned, base_scores, after_scores = planted

    def attack(steps):
        return relearn_attack(copy.deepcopy(unlearned), tok, PROBES, base_scores, after_scores,
                              steps, lr=1e-2, batch_size=4, seed=0)
    curve = attack([10, 5])  # any order: sorted
    five, ten = attack(5), attack(10)
    assert [p["steps"] for p in curve["curve"]] == [5, 10]
    # exact: the curve's checkpoints are the separate fine-tunes' results, float for float
    assert curve["curve"] == five["curve"] + ten["curve"]
    assert {k: v for k, v in curve.items() if k != "curve"} == {
        k: v for k, v in ten.items() if k != "curve"}  # the last checkpoint, as a single attack
    assert ten["curve"][0]["recovered_share"] == ten["recovered_share"]


# ---- the benign attack: neighbour and utility answers only ------------------------------------
UTILITY = [Probe(prompt="What is the capital of France?", answer="Paris",
                 distractors=["Tokyo", "Rome", "Berlin"], split="utility", id="u-paris"),
           Probe(prompt="Name a colour.", split="utility", id="u-no-answer")]


def test_benign_set_holds_no_forget_probe():
    items = benign_set(PROBES + UTILITY, seed=0)
    assert sorted(p.id for p in items) == sorted([p.id for p in NEIGHBOURS] + ["u-paris"])
    assert benign_set(PROBES + UTILITY, seed=0) == items  # seeded order
    assert benign_set(PROBES + UTILITY, seed=1) != items


def test_benign_attack_never_trains_on_a_forget_probe(planted, monkeypatch):
    tok, _, unlearned, base_scores, after_scores = planted
    probes = PROBES + UTILITY
    base = base_scores + [[-1.0, -2.0, -3.0, -4.0], []]
    after = after_scores + [[-1.0, -2.0, -3.0, -4.0], []]
    seen: list = []
    real = relearn.finetune_curve

    def spy(model, tok_, train_set, checkpoints, score, *args):
        seen.append(list(train_set))
        return real(model, tok_, train_set, checkpoints, score, *args)
    monkeypatch.setattr(relearn, "finetune_curve", spy)
    out = benign_attack(copy.deepcopy(unlearned), tok, probes, base, after, [2, 4], lr=1e-2)
    (trained,) = seen
    assert trained and all(p.split in ("neighbor", "utility") for p in trained)
    forget = {(p.prompt, p.prefix, p.answer) for p in probes if p.split == "forget"}
    assert not forget & {(p.prompt, p.prefix, p.answer) for p in trained}
    assert (out["n_train"], out["train_splits"]) == (7, {"neighbor": 6, "utility": 1})
    # scored on every base-known forget fact (not only three quarters of them)
    assert out["n_scored"] == len(KNOWN) and [p["steps"] for p in out["curve"]] == [2, 4]
    assert out["known_accuracy"]["after"] == pytest.approx(
        _accuracy([after_scores[i] for i in KNOWN]))


def test_benign_attack_without_training_items_is_reported(planted):
    tok, _, unlearned, base_scores, after_scores = planted
    forget_only = [(p, b, a) for p, b, a in zip(PROBES, base_scores, after_scores, strict=True)
                   if p.split == "forget"]
    probes, base, after = (list(x) for x in zip(*forget_only, strict=True))
    out = benign_attack(copy.deepcopy(unlearned), tok, probes, base, after, [3])
    assert out == {"steps": 3,
                   "error": "no neighbour or utility probe with an answer to fine-tune on"}
