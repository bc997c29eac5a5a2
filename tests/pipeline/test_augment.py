"""Training forms (aglora.pipeline.augment): deterministic for a seed, never an evaluation probe
of a shipped concept, and a validation split disjoint from training by source item."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aglora.concepts import ConceptSpec, Probe, load_concept
from aglora.pipeline.augment import (
    FORMS,
    misspell,
    source_id,
    split_validation,
    training_items,
)

WRONG = ("Ridley Scott", "Sam Mendes", "Ang Lee")
CONCEPTS = Path(__file__).resolve().parents[2] / "src" / "aglora" / "data" / "concepts"


def _spec() -> ConceptSpec:
    forget = [Probe(prompt="Who directed Inception?", prefix="Inception was directed by",
                    answer="Christopher Nolan", distractors=list(WRONG),
                    id="f-dir"),
              Probe(prompt="Which 2010 film is about dream heists?", prefix="It is",
                    answer="Inception", distractors=["Avatar", "Up", "Heat"], id="f-title")]
    retain = [Probe(prompt="Who directed Dunkirk?", prefix="Dunkirk was directed by",
                    answer="Christopher Nolan", distractors=list(WRONG),
                    split="neighbor", id="r-dunkirk")]
    return ConceptSpec(name="inception", forget=forget, retain=retain, leak_patterns=["incep"],
                       refusals=[], alternatives=[], probe_files=[], source=None,
                       description="The 2010 film Inception, about dream heists.")


def test_forms_are_deterministic_for_a_seed_and_differ_across_seeds():
    spec = _spec()
    a = training_items(spec, spec.description, seed=3)
    b = training_items(spec, spec.description, seed=3)
    c = training_items(spec, spec.description, seed=4)
    assert [p.to_dict() for p in a[0] + a[1]] == [p.to_dict() for p in b[0] + b[1]]
    assert [p.prompt for p in a[0]] != [p.prompt for p in c[0]]


def test_every_form_is_built_and_keeps_the_answer():
    spec = _spec()
    forget, retain = training_items(spec, spec.description, seed=0)
    assert {p.family for p in forget} >= set(FORMS)
    assert "description" not in {p.family for p in retain}
    for p in forget + retain:
        src = next(q for q in spec.forget + spec.retain if q.id == source_id(p))
        assert p.answer == src.answer and p.distractors == src.distractors
    mc = next(p for p in forget if p.family == "multiple-choice" and source_id(p) == "f-dir")
    assert all(o in mc.prompt for o in ["Christopher Nolan", "Ridley Scott", "Sam Mendes"])
    comp = next(p for p in forget if p.family == "completion" and source_id(p) == "f-dir")
    assert comp.format == "completion" and comp.prompt == "Inception was directed by"
    assert comp.prefix == ""
    blank = next(p for p in forget if p.family == "blank" and source_id(p) == "f-dir")
    assert "Chr____" in blank.prompt
    wrong = next(p for p in forget if p.family == "misspelled")
    assert "Inception" not in wrong.prompt and wrong.answer in ("Christopher Nolan", "Inception")
    desc = [p for p in forget if p.family == "description"]
    assert desc and all(p.answer == "Inception" for p in desc)
    assert all("inception" not in p.prompt.lower() for p in desc)  # the name is not given away


def test_augment_off_gives_the_spec_items():
    spec = _spec()
    forget, retain = training_items(spec, spec.description, augment=False)
    assert forget == spec.forget and retain == spec.retain


def test_misspell_is_a_near_miss():
    rng = random.Random(0)
    for word in ("Inception", "Einstein", "Eiffel"):
        out = misspell(word, rng)
        assert out != word and abs(len(out) - len(word)) <= 1
        assert out[0] == word[0] and out[-1] == word[-1]
    assert misspell("Up", rng) == "Up"


def test_validation_split_is_disjoint_by_source_and_seeded():
    spec = _spec()
    forget, _ = training_items(spec, spec.description, seed=0)
    train, val = split_validation(forget, 0.5, seed=1)
    assert train and val
    assert not {source_id(p) for p in train} & {source_id(p) for p in val}
    assert len(train) + len(val) == len(forget)
    again = split_validation(forget, 0.5, seed=1)
    assert [p.id for p in again[1]] == [p.id for p in val]
    assert split_validation(forget, 0.0) == (forget, [])


HELDOUT = CONCEPTS.parents[3] / "heldout"


SPECS = sorted(CONCEPTS.glob("*.yaml")) + sorted(HELDOUT.glob("*.yaml"))


@pytest.mark.parametrize("spec_file", SPECS, ids=lambda p: p.stem)
def test_no_training_form_is_a_shipped_evaluation_probe(spec_file):
    spec = load_concept(str(spec_file))
    forget, retain = training_items(spec, spec.description, seed=0)
    probes = {(p.format, p.prompt.strip().lower()) for p in spec.eval_probes()}
    clashes = [p.prompt for p in forget + retain if (p.format, p.prompt.strip().lower()) in probes]
    assert clashes == []
