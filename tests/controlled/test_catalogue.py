"""The synthetic film catalogue (aglora.controlled.catalogue)."""

from __future__ import annotations

import pytest

from aglora.controlled.catalogue import FIELDS, generate_catalogue
from aglora.errors import AgloraError


def test_catalogue_is_deterministic_for_a_seed():
    a, b, c = generate_catalogue(3), generate_catalogue(3), generate_catalogue(4)
    assert a.to_dict() == b.to_dict() and a.digest() == b.digest()
    assert a.digest() != c.digest()
    assert [f.title for f in a.films] != [f.title for f in c.films]


def test_catalogue_is_well_formed():
    cat = generate_catalogue(0, n_films=20, n_forget=2)
    assert len(cat.films) == 20 and len(cat.questions) == 160
    assert len({f.title for f in cat.films}) == 20
    assert [f.index for f in cat.forget_films] == [0, 1]
    ids = set()
    for film in cat.films:
        qs = [q for q in cat.questions if q.film == film.index]
        assert [q.field for q in qs] == list(FIELDS)  # 8 questions per film
        for q in qs:
            for probe in (q.question, q.paraphrase):
                assert film.title in probe.prompt and film.title in probe.prefix
                assert probe.answer == getattr(film, q.field)
                assert len(probe.distractors) == 3
                assert len(set(probe.distractors)) == 3
                assert probe.answer not in probe.distractors
                assert probe.split == ("forget" if film.forget else "neighbor")
                ids.add(probe.id)
            assert q.question.prompt != q.paraphrase.prompt
            assert q.question.prefix != q.paraphrase.prefix
            assert q.question.distractors == q.paraphrase.distractors
    assert len(ids) == 320
    assert len(cat.probes(forget=True)) == 32
    assert len(cat.probes(forget=False, wording="paraphrase")) == 144


@pytest.mark.parametrize("kwargs", [{"n_films": 3}, {"n_forget": 0}, {"n_forget": 20},
                                    {"n_films": 100}])
def test_catalogue_rejects_bad_sizes(kwargs):
    with pytest.raises(AgloraError):
        generate_catalogue(0, **{"n_films": 20, "n_forget": 2, **kwargs})


def test_catalogue_rejects_bad_wording():
    with pytest.raises(AgloraError, match="wording"):
        generate_catalogue(0).probes(forget=True, wording="typo")
