"""Title matching (aglora.recommend.matcher): case, articles, punctuation and typos, on cases
worked out by hand."""

from __future__ import annotations

from aglora.recommend.matcher import list_items, normalize, within_one_edit


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
