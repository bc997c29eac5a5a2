"""The ban's concept spec (aglora.recommend.spec): replaced list items, protected titles, the
distractor start."""

from __future__ import annotations

import pytest

from aglora.errors import AgloraError
from aglora.recommend.catalog import load_catalog
from aglora.recommend.matcher import normalize
from aglora.recommend.prompts import RecPrompt
from aglora.recommend.ranking import RANK_PREFIX
from tests.recommend.helpers import small_catalog


def test_replace_banned_items_by_hand(matcher):
    from aglora.recommend.spec import replace_banned_items

    banned = {normalize("The Matrix")}
    text = ("Here are some films:\n1. The Matrix (1999) - mind-bending\n2. Alien (1979)\n"
            "3. the matrix\n4. Jaws")
    edited = replace_banned_items(text, matcher, banned, ["Alien", "Heat", "Titanic", "Jaws"])
    # Alien is already listed: the banned lines get Heat, then Titanic; other lines are kept.
    assert edited == ("Here are some films:\n1. Heat\n2. Alien (1979)\n3. Titanic\n4. Jaws")
    assert replace_banned_items("1. Alien\n2. Jaws", matcher, banned, ["Heat"]) is None  # none
    assert replace_banned_items("1. The Matrix\n2. Heat", matcher, banned, ["Heat"]) is None
    free = "1. The Matrix\nAlso The Matrix is great."  # a banned title left in running text
    assert replace_banned_items(free, matcher, banned, ["Heat"]) is None


def test_protected_titles_and_items_by_hand(tmp_path):
    from collections import Counter

    from aglora.recommend.spec import protected_items, protected_titles

    catalog = small_catalog(tmp_path)
    a, b, c, d = (m.title for m in catalog.movies[:4])
    listed = Counter({normalize(a): 5, normalize(b): 2, normalize(c): 2, normalize(d): 7,
                      "not in the catalogue": 9})
    banned = {normalize(d)}
    # most listed first, the banned title and unknown keys left out, ties in catalogue order
    assert protected_titles(listed, catalog, banned, 2) == [a, b]
    assert protected_titles(listed, catalog, banned, 10) == [a, b, c]
    assert protected_titles(listed, catalog, banned, 0) == []
    prompts = [RecPrompt(id=f"q{i}", text=f"prompt {i}", split="train", kind="genre")
               for i in range(5)]
    items = protected_items(prompts, [a, b])
    assert [(p.prompt, p.answer) for p in items] == [
        ("prompt 0", a), ("prompt 1", b), ("prompt 2", a), ("prompt 3", b), ("prompt 4", a)]
    assert all(p.prefix == RANK_PREFIX and p.family == "protected" for p in items)
    assert protected_items(prompts, []) == []
    sequel = Counter({normalize("The Matrix Reloaded"): 3, normalize("The Matrix"): 4,
                      normalize("Heat"): 1})
    assert protected_titles(sequel, load_catalog(), {normalize("The Matrix")}, 5) == ["Heat"]


def test_forget_distractor_start_moves_with_the_quantile():
    from aglora.recommend.settings import RecConfig
    from aglora.recommend.spec import distractor_start

    assert distractor_start(24, 0.5) == 12 == 24 // 2  # the median, as before the setting
    assert distractor_start(24, 0.65) == 15
    assert distractor_start(24, 1.0) == 21  # three titles must remain below the start
    assert distractor_start(5, 0.9) == 2 and distractor_start(2, 0.5) == 0
    with pytest.raises(AgloraError, match="forget_distractor_quantile=1.5: must be between"):
        RecConfig(forget_distractor_quantile=1.5)


def test_a_film_near_two_banned_titles_is_one_neighbour(tmp_path):
    """Alpha and Beta (banned) share their director with Gamma: Gamma's probes and retain
    items appear once, and every probe id in the written probe file is unique (a repeated id
    is refused when the file is loaded)."""
    import json

    from aglora.concepts import load_probes
    from aglora.recommend.prompts import make_prompts
    from aglora.recommend.settings import RecConfig
    from aglora.recommend.spec import build_ban_spec
    from tests.tiny import make_model, make_tokenizer
    extra = [["Alpha", "1990", "Drama", "Ann Director", "Al One"],
             ["Beta", "1991", "Drama", "Ann Director", "Bo Two"],
             ["Gamma", "1992", "Drama", "Ann Director", "Cy Three"]]
    catalog = small_catalog(tmp_path, extra)
    banned = [m for m in catalog.movies if m.title in ("Alpha", "Beta")]
    rec = RecConfig(n_train_prompts=4, n_eval_prompts=4, n_rank_prompts=2, pool_size=6,
                    max_new_tokens=8, n_samples=0)
    train_p, eval_p = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts, rec.seed)
    build_ban_spec(make_model(), make_tokenizer(), catalog, banned, train_p, eval_p, rec,
                   tmp_path / "ban")
    rows = [json.loads(x) for x in (tmp_path / "ban" / "probes.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    gamma = [i for i in ids if "gamma" in i]
    assert gamma and len(gamma) == len(set(gamma))
    load_probes(tmp_path / "ban" / "probes.jsonl")  # no repeated id
