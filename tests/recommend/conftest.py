"""A title matcher over a fixed list of tricky titles (articles, punctuation, sequels, short
words)."""

from __future__ import annotations

import pytest

from aglora.recommend.matcher import TitleMatcher

TITLES = ["The Matrix", "The Matrix Reloaded", "Inception", "Up", "Heat", "Schindler's List",
          "The Shawshank Redemption", "Alien", "Aliens", "1917", "Monsters, Inc.",
          "The Godfather", "The Godfather Part II", "Get Out", "Amélie", "Mission: Impossible"]


@pytest.fixture
def matcher() -> TitleMatcher:
    return TitleMatcher(TITLES)
