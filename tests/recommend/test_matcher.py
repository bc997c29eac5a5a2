"""Recommender unlearning: matcher, ranking, NDCG, metrics and errors, on cases worked out by hand
and on tiny models built in code (no download)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tiny import make_model, make_tokenizer

from aglora.cli import main
from aglora.concepts import Probe, load_concept
from aglora.errors import AgloraError
from aglora.model.likelihood import score_options_reference
from aglora.recommend.ban import resolve_items
from aglora.recommend.catalog import BUILTIN_CATALOG, load_catalog
from aglora.recommend.matcher import TitleMatcher, list_items, normalize, within_one_edit
from aglora.recommend.metrics import (
    banned_rank,
    exposure,
    genre_agreement,
    names_banned,
    validity,
)
from aglora.recommend.prompts import RecPrompt, make_prompts
from aglora.recommend.ranking import RANK_PREFIX, ndcg_at_k, ranks, title_scores

TITLES = ["The Matrix", "The Matrix Reloaded", "Inception", "Up", "Heat", "Schindler's List",
          "The Shawshank Redemption", "Alien", "Aliens", "1917", "Monsters, Inc.",
          "The Godfather", "The Godfather Part II", "Get Out", "Amélie", "Mission: Impossible"]


@pytest.fixture
def matcher() -> TitleMatcher:
    return TitleMatcher(TITLES)


# ---- matcher ------------------------------------------------------------------------------
def test_normalize():
    assert normalize("The Matrix") == "matrix"
    assert normalize("  the MATRIX!! ") == "matrix"
    assert normalize("Schindler's List") == "schindlers list"
    assert normalize("Amélie") == "amelie"
    assert normalize("Monsters, Inc.") == "monsters inc"
    assert normalize("Thelma & Louise") == "thelma and louise"
    assert normalize("A Few Good Men") == "few good men"
    assert normalize("Up") == "up"


def test_within_one_edit():
    assert within_one_edit("inception", "inception")
    assert within_one_edit("inception", "inceptio")      # deletion
    assert within_one_edit("inception", "incepption")    # insertion
    assert within_one_edit("inception", "incaption")     # substitution
    assert within_one_edit("inception", "inecption")     # adjacent transposition
    assert not within_one_edit("inception", "incpetoin")  # two edits
    assert not within_one_edit("matrix", "matrices")


def test_find_titles_tolerates_case_articles_punctuation_and_typos(matcher):
    text = ("You could watch the matrix? No: The MATRIX reloaded, or Shawshank Redemtion, "
            "and Schindlers List. Also Amelie and Inceptoin.")
    assert matcher.find(text) == ["matrix reloaded", "shawshank redemption", "schindlers list",
                                  "amelie", "inception"]


def test_no_false_hits_on_short_common_words(matcher):
    text = ("Up to you! It got up early; Heat the pan. Get Out of here, 1917 people. "
            "An alien came.")
    assert matcher.find(text) == []


def test_short_titles_count_as_whole_list_items(matcher):
    text = "1. Up\n2. Heat (1995) - a heist film\n3. Up in the clouds we go\n4. 1917\n5. Alein"
    # 'Alein' is one transposition from 'Alien', but 'alien' has 5 characters: no fuzzy match
    assert [k for _, k in matcher.items(text)] == ["up", "heat", None, "1917", None]
    assert matcher.match_item("Alienz") == "aliens"  # 6 characters: one substitution allowed


def test_list_items_and_longest_title_wins(matcher):
    text = ("Sure! Here are some:\n\n1. **The Godfather Part II** (1974) - sequel\n"
            "2. The Godfather: a classic\n- Mission: Impossible\n* \"Get Out\"\n"
            "3. The Great Grin (1980)\n")
    items = matcher.items(text)
    assert [k for _, k in items] == ["godfather part ii", "godfather", "mission impossible",
                                     "get out", None]
    assert list_items('I suggest "Inception" and **Heat**.') == ["Inception", "Heat"]
    assert matcher.find('I suggest "Inception" and **Heat**.') == ["inception", "heat"]


# ---- ranking and NDCG -----------------------------------------------------------------------
def test_ranks_by_hand():
    scores = torch.tensor([[0.5, 2.0, -1.0, 2.0], [3.0, 2.0, 1.0, 0.0]])
    assert ranks(scores).tolist() == [[3, 1, 4, 2], [1, 2, 3, 4]]


def test_ndcg_by_hand():
    base = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert ndcg_at_k(base, base, k=3) == pytest.approx(1.0)
    # base relevance at k=3: t0=3, t1=2, t2=1; after top-3 is t1, t0, t2
    after = [4.0, 5.0, 3.0, 2.0, 1.0]
    expected = (2 + 3 / math.log2(3) + 1 / 2) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg_at_k(base, after, k=3) == pytest.approx(expected)
    assert expected == pytest.approx(0.9224945, abs=1e-6)
    # after top-3 is t3, t4, t0 -> only t0 (rel 3) counts, at position 3
    worse = [3.0, 0.0, -1.0, 5.0, 4.0]
    assert ndcg_at_k(base, worse, k=3) == pytest.approx((3 / 2) / (3 + 2 / math.log2(3) + 0.5))


def test_ndcg_excludes_banned_titles():
    base = [9.0, 5.0, 4.0, 3.0]      # title 0 is banned: it drops to the bottom after
    after = [-9.0, 5.0, 4.0, 3.0]
    assert ndcg_at_k(base, after, exclude={0}, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(base, after, k=3) < 0.9  # counting the banned title would punish the ban
    swapped = [-9.0, 4.0, 5.0, 3.0]  # kept titles 1 and 2 swap: rel 3,2,1 -> order 2,3,1
    expected = (2 + 3 / math.log2(3) + 1 / 2) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg_at_k(base, swapped, exclude={0}, k=3) == pytest.approx(expected)


def test_banned_rank_median_by_hand():
    scores = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [5.0, 1.0, 2.0]])
    got = banned_rank(scores, 0)
    assert got["ranks"] == [2, 3, 1] and got["median"] == 2


def test_title_scores_match_reference_on_tiny_model():
    model, tok = make_model(), make_tokenizer()
    titles = ["Inception", "Memento", "Tenet", "Dunkirk", "Interstellar"]
    prompts = ["Recommend a film.", "Who directed Titanic?"]
    got = title_scores(model, tok, prompts, titles, chunk=2, batch_size=4)  # [2, 5]
    for p, text in enumerate(prompts):
        probe = Probe(prompt=text, prefix=RANK_PREFIX, answer=titles[0],
                      distractors=titles[1:])
        ref = score_options_reference(model, tok, [probe])[0]
        assert got[p].tolist() == pytest.approx(ref, abs=1e-4)
    whole = title_scores(model, tok, prompts, titles, chunk=104)
    assert torch.allclose(whole, got, atol=1e-4)


# ---- metrics --------------------------------------------------------------------------------
def test_exposure_validity_genre_by_hand(tmp_path):
    catalog = _small_catalog(tmp_path)
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


# ---- prompts --------------------------------------------------------------------------------
def test_prompts_deterministic_and_held_apart():
    catalog = load_catalog()
    train, evals = make_prompts(catalog, 40, 30, seed=3)
    again = make_prompts(catalog, 40, 30, seed=3)
    assert [p.text for p in train + evals] == [p.text for p in again[0] + again[1]]
    assert not {p.text for p in train} & {p.text for p in evals}
    assert len({p.text for p in evals}) == 30 and all(p.genres or p.kind == "mood"
                                                      for p in evals)


# ---- catalogue and errors -------------------------------------------------------------------
def test_shipped_catalogue():
    catalog = load_catalog()
    assert len(catalog) >= 250 and catalog.source == BUILTIN_CATALOG
    m = catalog.resolve("the matrix")
    assert (m.title, m.year, m.directors) == ("The Matrix", 1999,
                                              ("Lana Wachowski", "Lilly Wachowski"))


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["title", "year", "genres", "director", "cast"])
        w.writerows(rows)
    return path


def _small_catalog(tmp_path: Path, extra: list[list[str]] | None = None):
    rows = [[m.title, str(m.year), ";".join(m.genres), ";".join(m.directors), ";".join(m.cast)]
            for m in load_catalog().movies[:24]]
    rows += [["Heat", "1995", "Crime;Thriller", "Michael Mann", "Al Pacino"]] if not any(
        r[0] == "Heat" for r in rows) else []
    return load_catalog(_write_csv(tmp_path / "small.csv", rows + (extra or [])))


def test_catalogue_errors(tmp_path):
    with pytest.raises(AgloraError, match="not found"):
        load_catalog(tmp_path / "none.csv")
    good = _small_catalog(tmp_path)
    lines = (tmp_path / "small.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:5] + ["The Good, the Bad and the Ugly,1966,Western,Leone,"
                                          "Clint Eastwood"] + lines[5:]) + "\n")
    with pytest.raises(AgloraError, match=r"bad\.csv:6: expected 5 fields.*quote a title"):
        load_catalog(bad)
    bad.write_text("\n".join(lines + ["Tenet2,20x0,Action,Nolan,Someone"]) + "\n")
    with pytest.raises(AgloraError, match=rf"bad\.csv:{len(lines) + 1}: year '20x0'"):
        load_catalog(bad)
    bad.write_text("\n".join(lines + ["the matrix,1999,Action,W,K"]) + "\n")
    with pytest.raises(AgloraError, match=r"duplicate title 'the matrix' \(first on line"):
        load_catalog(bad)
    bad.write_text("name,year\nx,1\n")
    with pytest.raises(AgloraError, match="bad.csv:1: header must be"):
        load_catalog(bad)
    with pytest.raises(AgloraError, match="'The Matrx' is not in the catalogue.*'The Matrix'"):
        good.resolve("The Matrx")
    with pytest.raises(AgloraError, match="ban list is empty"):
        resolve_items(good, [])


def test_cli_ban_errors(capsys, tmp_path):
    assert main(["ban", "--out", str(tmp_path / "r")]) == 2
    assert "ban list is empty" in capsys.readouterr().err
    assert main(["ban", "--item", "The Matrx", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'The Matrix'" in capsys.readouterr().err
    bad = _write_csv(tmp_path / "c.csv", [["X", "1999", "Drama", "D", "C", "extra"]])
    assert main(["ban", "--item", "X", "--catalog", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "c.csv:2: expected 5 fields" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---- end to end on a tiny model -------------------------------------------------------------
TINY_SETTINGS = ["--set", "recommend.n_train_prompts=4", "--set", "recommend.n_eval_prompts=3",
                 "--set", "recommend.n_rank_prompts=2", "--set", "recommend.n_samples=1",
                 "--set", "recommend.max_new_tokens=6", "--set", "recommend.pool_size=6",
                 "--set", "train.max_steps=2", "--set", "eval.include_tofu=false",
                 "--set", "mask.k=8", "--set", "eval.max_new_tokens=4",
                 "--set", "eval.n_samples=1"]


def test_ban_end_to_end_on_tiny_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AGLORA_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    catalog = _small_catalog(tmp_path)
    cat = str(catalog.source)
    first = catalog.movies[0].title
    a, b = tmp_path / "ban-a", tmp_path / "ban-b"
    common = ["--catalog", cat, "--model", str(model_dir), *TINY_SETTINGS]
    assert main(["ban", "--item", first, "--item", catalog.movies[3].title, "--out", str(a),
                 *common]) == 0
    concept = load_concept(a / "ban" / "concept.yaml")
    assert {p.answer for p in concept.forget} >= {first, catalog.movies[3].title}
    assert first not in {p.answer for p in concept.retain}
    rec = json.loads((a / "metrics.json").read_text())["recommendation"]
    assert rec["banned"] == [first, catalog.movies[3].title]
    assert rec["n_titles"] == len(catalog) and rec["n_rank_prompts"] <= 2
    assert 0 <= rec["ndcg10"]["mean"] <= 1 + 1e-9
    assert "Recommendation" in (a / "report.md").read_text()
    assert list((tmp_path / "cache" / "recommend").glob("base-*.json"))
    assert main(["ban", "--item", catalog.movies[5].title, "--out", str(b), "--combine-with",
                 str(a), *common]) == 0
    inter = json.loads((b / "metrics.json").read_text())["recommendation"]["interference"]
    assert inter["other_banned"] == rec["banned"] and isinstance(inter["interferes"], bool)
    assert "Two bans loaded together" in (b / "report.md").read_text()
    capsys.readouterr()
    assert main(["recommend", "--adapter", str(a), "Recommend five films.",
                 "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("base") and line.rstrip().endswith("after") for line in lines)


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

    catalog = _small_catalog(tmp_path)
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


def test_validity_of_the_other_items_in_metrics_and_report(tmp_path):
    # Base lists hold the banned title plus one real and one invented title; the ban puts an
    # invented title in the banned slot. All items: 2/3 -> 1/3 (0.5 x); the other items: 1/2
    # -> 1/3 (0.67 x); the report judges the target on the other items and says "NOT met".
    from aglora.recommend.metrics import recommendation_metrics
    from aglora.recommend.report_section import recommendation_section
    catalog = _small_catalog(tmp_path)
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


def test_forget_distractor_start_moves_with_the_quantile():
    from aglora.recommend.settings import RecConfig
    from aglora.recommend.spec import distractor_start

    assert distractor_start(24, 0.5) == 12 == 24 // 2  # the median, as before the setting
    assert distractor_start(24, 0.65) == 15
    assert distractor_start(24, 1.0) == 21  # three titles must remain below the start
    assert distractor_start(5, 0.9) == 2 and distractor_start(2, 0.5) == 0
    with pytest.raises(AgloraError, match="forget_distractor_quantile=1.5: must be between"):
        RecConfig(forget_distractor_quantile=1.5)


def test_validity_ratio_interval_by_hand(tmp_path):
    from aglora.recommend.metrics import ratio_interval, validity_counts

    matcher = TitleMatcher(_small_catalog(tmp_path).titles)
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


def test_a_ban_saved_before_a_recommend_setting_existed_reopens():
    import dataclasses

    from aglora.recommend.ban import same_ban
    from aglora.recommend.settings import RecConfig

    now = {"items": ["Star Wars"], "recommend": dataclasses.asdict(RecConfig())}
    old = {"items": ["Star Wars"], "recommend": {k: v for k, v in now["recommend"].items()
                                                 if k != "forget_distractor_quantile"}}
    assert same_ban(old, now) and same_ban(now, now)
    # ...but not when the new setting is asked for at another value, or the items differ
    moved = {**now, "recommend": {**now["recommend"], "forget_distractor_quantile": 0.7}}
    assert not same_ban(old, moved)
    assert not same_ban({**old, "items": ["Alien"]}, now)
