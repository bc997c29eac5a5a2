"""Recommendation prompts (aglora.recommend.prompts)."""

from __future__ import annotations

from aglora.recommend.catalog import load_catalog
from aglora.recommend.prompts import make_prompts


def test_prompts_deterministic_and_held_apart():
    catalog = load_catalog()
    train, evals = make_prompts(catalog, 40, 30, seed=3)
    again = make_prompts(catalog, 40, 30, seed=3)
    assert [p.text for p in train + evals] == [p.text for p in again[0] + again[1]]
    assert not {p.text for p in train} & {p.text for p in evals}
    assert len({p.text for p in evals}) == 30 and all(p.genres or p.kind == "mood"
                                                      for p in evals)
