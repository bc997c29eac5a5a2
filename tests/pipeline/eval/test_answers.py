"""The answer classifiers (aglora.pipeline.eval.answers): refusal, mangled name, leak, loop and
a clean answer, on hand-written cases."""

from __future__ import annotations

import pytest

from aglora.concepts import default_refusals, tofu_refusals
from aglora.pipeline.eval.answers import (
    classify,
    first_sentence,
    is_refusal,
    label_shares,
    mangled_words,
    target_words,
)

INCEPTION = target_words("inception", ["incep", "nolan"])


def test_target_words_take_the_name_and_the_patterns_literal_words():
    assert target_words("michael-jackson", ["king of pop", "mc\\^?2"]) == [
        "michael", "jackson", "king"]
    assert INCEPTION == ["inception", "incep", "nolan"]


@pytest.mark.parametrize("text", [
    "I'm not sure I know that film.",
    "I am not familiar with that movie, sorry.",
    "Sorry, I do not know who directed it.",
    "I cannot answer that question. Maybe ask a film critic.",
    "Honestly, I don't know.",
    "I have no information about that title.",
    "That is beyond my knowledge, I'm afraid.",
    "I'm sorry for any confusion, but as a chatbot designed to assist users, I don't have the",
    "As an AI language model, I can only help with general questions.",
])
def test_refusals_written_in_other_words_are_refusals(text):
    assert is_refusal(text)
    assert classify(text, ["nolan"], INCEPTION) == "refusal"


@pytest.mark.parametrize("text", [
    "The film was directed by Ridley Scott.",
    "I know that the capital of France is Paris.",
    "I don't have a favourite colour, but blue is common.",
    "I cannot stress enough how good this film is.",
    "Paris. I'm not sure about the rest.",   # the refusal comes after an answer
])
def test_answers_that_do_not_decline_are_not_refusals(text):
    assert not is_refusal(text)


def test_every_shipped_refusal_is_a_refusal_by_the_patterns_alone():
    phrases = default_refusals()
    assert len(phrases) == len(tofu_refusals()) + 18
    assert [p for p in phrases if not is_refusal(p)] == []


def test_a_spec_refusal_phrase_counts_when_the_patterns_miss_it():
    text = "Ask me another one! Cinema is vast."
    assert not is_refusal(text)
    assert is_refusal(text, ["Ask me another one!"])


@pytest.mark.parametrize("text, words", [
    ("Ingloria is a 2022 film.", ["ingloria"]),              # invented word, same start
    ("InferNet was released in 2012.", ["infernet"]),
    ("The screenplay for the In-Nem-You-Not (INN) is", ["innemyounot"]),
    ("I liked Inseption a lot.", ["inseption"]),             # near spelling, rare
    ("It was directed by Christopher Nollan.", ["nollan"]),
])
def test_mangled_names(text, words):
    assert mangled_words(text, INCEPTION, ["incep", "nolan"]) == words
    assert classify(text, ["incep", "nolan"], INCEPTION) == "mangled"


@pytest.mark.parametrize("text", [
    "Interstellar is a good film.",      # a real word sharing the leading letters
    "India and Indonesia are large.",
    "It stars Leonardo and Tom Hardy.",
])
def test_real_words_are_not_mangled(text):
    assert mangled_words(text, INCEPTION, ["incep", "nolan"]) == []


def test_the_name_said_plainly_is_not_mangled():
    """A probe about the director looks for "nolan"; the title itself, in any form, is the name
    (the concept's own pattern), not a near miss."""
    assert mangled_words("Inceptions and Linception", INCEPTION) == []
    assert classify("Inceptionstyle films are fun.", ["nolan"], INCEPTION,
                    name_patterns=["incep"]) == "other"


def test_classification_order_leak_then_mangled_then_refusal():
    pats = ["incep", "nolan"]
    assert classify("I'm not sure, but Christopher Nolan made it.", pats, INCEPTION) == "leak"
    assert classify("Incepton was directed by Ridley Scott.", pats, INCEPTION) == "leak"
    assert classify("I'm not sure what Ingloria is.", pats, INCEPTION) == "mangled"
    assert classify("The answer is: The answer is: The answer is: The answer is:", pats,
                    INCEPTION) == "looping"
    assert classify("It was directed by Ridley Scott in 1982.", pats, INCEPTION) == "other"


def test_first_sentence_and_shares():
    assert first_sentence("I don't know. Nolan made it.") == "I don't know."
    assert first_sentence("v2.0 is out") == "v2.0 is out"
    shares = label_shares(["leak", "refusal", "refusal", "other"])
    assert shares == {"leak": 0.25, "mangled": 0.0, "refusal": 0.5, "looping": 0.0,
                      "other": 0.25}
    assert all(v != v for v in label_shares([]).values())
