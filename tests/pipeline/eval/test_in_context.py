"""The in-context attack (aglora.pipeline.eval.in_context): what the prompt holds, that chat probes
keep their template (the facts inside the user message), and the numbers against score_options
on a tiny adapted model."""

from __future__ import annotations

import pytest

from aglora.concepts import Probe
from aglora.model.adapter import adapter_disabled, merged_copy
from aglora.model.likelihood import score_options
from aglora.model.tokens import context_text
from aglora.pipeline.eval.in_context import (
    context_block,
    in_context_attack,
    with_context,
)
from aglora.pipeline.eval.relearn import split_attack_set
from tests.tiny import make_adapted, make_tokenizer

FILMS = [("Inception", "Christopher Nolan"), ("Titanic", "James Cameron"),
         ("Alien", "Ridley Scott"), ("Jaws", "Steven Spielberg"), ("Dune", "Denis Villeneuve"),
         ("Memento", "Christopher Nolan"), ("Avatar", "James Cameron"),
         ("Gladiator", "Ridley Scott")]
OPTIONS = sorted({d for _, d in FILMS})


def _fact(i: int, film: str, director: str) -> Probe:
    return Probe(prompt=f"Who directed {film}?", prefix=f"{film} was directed by",
                 answer=director, distractors=[d for d in OPTIONS if d != director][:3],
                 split="forget", id=f"f{i}", format="chat" if i % 2 else "completion")


PROBES = [_fact(i, f, d) for i, (f, d) in enumerate(FILMS)] + [
    Probe(prompt="Who directed Tenet?", answer="Christopher Nolan", distractors=["James Cameron"],
          split="neighbor", id="n0")]
# Hand scores: the base knows every forget fact, the unlearned model none; the neighbour is known
BASE = [[-1.0, -3.0, -4.0, -5.0]] * 8 + [[-1.0, -2.0]]
AFTER = [[-6.0, -3.0, -4.0, -5.0]] * 8 + [[-1.0, -2.0]]


def test_the_prompt_holds_the_attack_facts_and_not_the_held_out_answer():
    attack, held = split_attack_set(list(range(8)), seed=0)
    block = context_block([PROBES[i] for i in attack])
    assert block == "\n".join(f"{PROBES[i].prompt} {PROBES[i].answer}" for i in attack)
    for i in held:
        p = with_context(PROBES[i], block)
        assert p.prompt == f"{block}\n\n{PROBES[i].prompt}"
        for j in attack:
            assert f"{PROBES[j].prompt} {PROBES[j].answer}" in p.prompt
        # its own question is asked, its own fact is not given
        assert f"{PROBES[i].prompt} {PROBES[i].answer}" not in p.prompt
        if not any(PROBES[j].answer == PROBES[i].answer for j in attack):
            assert PROBES[i].answer not in p.prompt
        # options, prefix, split and format are the probe's own
        assert (p.answer, p.distractors, p.prefix, p.format, p.split) == (
            PROBES[i].answer, PROBES[i].distractors, PROBES[i].prefix, PROBES[i].format,
            PROBES[i].split)
        assert p.id == f"{PROBES[i].id}+context"


def test_a_chat_probe_gets_the_facts_inside_its_user_message():
    tok = make_tokenizer()
    probe = PROBES[1]  # chat
    block = context_block([PROBES[0], PROBES[2]])
    text = context_text(tok, with_context(probe, block))
    # the template is intact: system, then one user turn holding facts + question, then the
    # assistant turn with the scoring prefix
    assert text == context_text(tok, probe).replace(probe.prompt, f"{block}\n\n{probe.prompt}")
    user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    assert user == f"{block}\n\n{probe.prompt}"
    assert text.endswith(f"<|im_start|>assistant\n{probe.prefix}")
    assert text.count("<|im_start|>") == 3


def test_in_context_attack_scores_held_out_probes_with_the_context():
    tok, model = make_tokenizer(), make_adapted()
    after_model = merged_copy(model)
    out = in_context_attack(model, tok, PROBES, BASE, AFTER, seed=0, after_model=after_model)
    attack, held = split_attack_set(list(range(8)), seed=0)  # the neighbour is never used
    assert (out["n_context"], out["n_held"]) == (2, 6)
    prompted = [with_context(PROBES[i], context_block([PROBES[j] for j in attack]))
                for i in held]
    after_ctx = score_options(after_model, tok, prompted)
    with adapter_disabled(model):
        base_ctx = score_options(model, tok, prompted)

    def acc(rows):
        return sum(r[0] > max(r[1:]) for r in rows) / len(rows)

    def margin(rows):
        return sum(r[0] - max(r[1:]) for r in rows) / len(rows)

    ka, mg = out["known_accuracy"], out["margin"]
    assert (ka["base"], ka["after"], mg["base"], mg["after"]) == (1.0, 0.0, 2.0, -3.0)
    assert ka["after_with_context"] == pytest.approx(acc(after_ctx))
    assert ka["base_with_context"] == pytest.approx(acc(base_ctx))
    assert mg["after_with_context"] == pytest.approx(margin(after_ctx), abs=1e-5)
    assert mg["base_with_context"] == pytest.approx(margin(base_ctx), abs=1e-5)
    # (with context - after) / (base - after)
    assert out["recovered_share"] == pytest.approx(acc(after_ctx))
    assert out["recovered_share_margin"] == pytest.approx((margin(after_ctx) + 3.0) / 5.0,
                                                          abs=1e-5)
    assert out["context_tokens"] > 0


def test_too_few_known_facts_or_too_long_a_context_is_reported():
    tok, model = make_tokenizer(), make_adapted()
    assert in_context_attack(model, tok, PROBES[:1], BASE[:1], AFTER[:1]) == {
        "error": "too few base-known forget probes for the attack"}
    long = [Probe(**{**p.__dict__, "prompt": p.prompt + " and" * 200}) for p in PROBES[:8]]
    out = in_context_attack(model, tok, long, BASE[:8], AFTER[:8])
    assert out["error"].startswith("the attack's context makes a probe")
    assert "more than the model's context of 512" in out["error"]
