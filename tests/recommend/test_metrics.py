"""Recommendation metrics (aglora.recommend.metrics) by hand: banned rank, exposure, validity,
genre agreement, the validity ratio interval."""

from __future__ import annotations

import json

import pytest
import torch

from aglora.errors import AgloraError
from aglora.recommend.matcher import TitleMatcher
from aglora.recommend.metrics import banned_rank, exposure, genre_agreement, names_banned, validity
from aglora.recommend.prompts import RecPrompt
from tests.recommend.helpers import small_catalog


def test_banned_rank_median_by_hand():
    scores = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [5.0, 1.0, 2.0]])
    got = banned_rank(scores, 0)
    assert got["ranks"] == [2, 3, 1] and got["median"] == 2


def test_exposure_validity_genre_by_hand(tmp_path):
    catalog = small_catalog(tmp_path)
    matcher = TitleMatcher(catalog.titles)
    gens = [["1. The Matrix\n2. Inception\n3. Not A Film", "1. Inception\n2. Heat"],
            ["I would pick Memento.", "1. Tenet\n2. The Matrix Reloaded"]]
    banned = {"matrix"}
    assert exposure(gens, banned, matcher) == 1 / 4  # 'Matrix Reloaded' is another title
    assert validity(gens, matcher) == (6 / 7, 7)      # 'Not A Film' is not a catalogue title
    # the banned title's own item left out: 5 valid of the 6 others
    assert validity(gens, matcher, leave_out=banned) == (5 / 6, 6)
    repeats = [["1. Inception\n2. Inception\n3. Fake One\n4. Fake One\n5. fake one"]]
    assert validity(repeats, matcher) == (2 / 5, 5)
    assert validity(repeats, matcher, distinct=True) == (1 / 2, 2)
    prompts = [RecPrompt("a", "x", "eval", "genre", [], ["Sci-Fi"]),
               RecPrompt("b", "y", "eval", "genre", [], ["Crime"])]
    # per list: [Matrix, Inception] 2/2; [Inception, Heat] 1/2; [Memento] 0/1; [Tenet, Reloaded] 0
    assert genre_agreement(gens, prompts, catalog, matcher) == pytest.approx((1 + .5) / 4)
    assert names_banned(RecPrompt("c", "z", "eval", "liked", ["the matrix"], []), banned)


def test_validity_of_the_other_items_in_metrics_and_report(tmp_path):
    # Base lists hold the banned title plus one real and one invented title; the ban puts an
    # invented title in the banned slot. All items: 2/3 -> 1/3 (0.5 x); the other items: 1/2
    # -> 1/3 (0.67 x); the report judges the target on the other items and says "NOT met".
    from aglora.recommend.metrics import recommendation_metrics
    from aglora.recommend.report_section import recommendation_section
    catalog = small_catalog(tmp_path)
    prompts = [RecPrompt("a", "x", "eval", "genre", [], ["Sci-Fi"])]
    base = [["1. The Matrix\n2. Heat\n3. Not A Film"]]
    after = [["1. Fake Title\n2. Heat\n3. Not A Film"]]
    scores = torch.arange(len(catalog), dtype=torch.float)[None]  # [1 prompt, n titles]
    r = recommendation_metrics(catalog, ["The Matrix"], prompts, base, after, scores, scores, [0])
    assert r["validity"]["base"] == pytest.approx(2 / 3)
    assert r["validity"]["after"] == pytest.approx(1 / 3)
    assert r["validity_others"] == {"base": 0.5, "after": pytest.approx(1 / 3),
                                    "n_items": {"base": 2, "after": 3},
                                    # one prompt: every resample is the whole set
                                    "ratio_ci95": [pytest.approx(2 / 3), pytest.approx(2 / 3)]}
    blocks = recommendation_section({"recommendation": r})
    rows = {row[0]: row for b in blocks for row in getattr(b, "rows", [])}
    others = rows["catalogue-title validity of the other items (banned titles left out)"]
    assert others[1] == "50.0 % → 33.3 %" and others[2].startswith("≥ 0.95 × base: NOT met")
    assert others[2].endswith("(0.67 ×; 95 % interval 0.67–0.67 ×)")
    # a run from before the metric gets it from its saved lists
    from aglora.recommend.ban import validity_others_from_lists
    lists = tmp_path / "recommendation_lists.jsonl"
    lists.write_text(json.dumps({"id": "a", "base": base[0], "after": after[0]}) + "\n")
    movies = [catalog.resolve("The Matrix")]
    assert validity_others_from_lists(lists, catalog, movies) == r["validity_others"]
    with pytest.raises(AgloraError, match="missing: rerun the ban with --force"):
        validity_others_from_lists(tmp_path / "none.jsonl", catalog, movies)


def test_validity_ratio_interval_by_hand(tmp_path):
    from aglora.recommend.metrics import ratio_interval, validity_counts

    matcher = TitleMatcher(small_catalog(tmp_path).titles)
    gens = [["1. The Matrix\n2. Fake One", "1. Heat"], ["1. Memento", "I would pick Heat."]]
    assert validity_counts(gens, matcher) == [(2, 3), (1, 1)]
    assert validity_counts(gens, matcher, {"matrix"}) == [(1, 2), (1, 1)]
    same = [(3, 4), (1, 2), (0, 1)]
    assert ratio_interval(same, same) == [1.0, 1.0]  # every resample: after = base
    # Two prompts, each 1 valid of 2 at base; after: 1 of 2 and 0 of 2. Resamples: both the
    # first (ratio 1, p 1/4), both the second (0, p 1/4), one of each (0.5): interval [0, 1].
    assert ratio_interval([(1, 2), (1, 2)], [(1, 2), (0, 2)]) == [0.0, 1.0]
    nan = ratio_interval([(0, 2)], [(1, 2)])  # no valid item at base: no ratio
    assert all(x != x for x in nan) and all(x != x for x in ratio_interval([], []))
