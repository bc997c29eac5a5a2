"""Find catalogue titles in generated text, and split a generation into list items.

Normalisation (`normalize`): accents stripped, lower case, `&` read as `and`, apostrophes
dropped, every other non-alphanumeric character a space, and a leading article (the, a, an)
removed - so "the godfather", "Godfather" and "THE GODFATHER!" are the same title.

Two ways a title is found:

* *list items*: numbered or bulleted lines (`1. The Matrix: ...`, `- **Heat** (1995)`), or, in a
  generation without such lines, quoted or bold spans. An item names a title when the item's text
  starts with it (the longest title wins: "The Godfather Part II" over "The Godfather"). Titles
  that are common words or very short ("Up", "Heat", "1917") count only when they are the whole
  title part of an item (the text before the first ':', ' - ', ' (' or ',').
* *free text*: any other mention, when its first word is capitalised in the text and the title is
  not one of those ambiguous ones ("Up", "It", "Signs", "Get Out", ...).

Small misspellings are tolerated: a title of at least `FUZZY_MIN_CHARS` characters (spaces
ignored) also matches text within one edit (substitution, insertion, deletion or transposition
of adjacent characters), unless the text is exactly another catalogue title.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

FUZZY_MIN_CHARS = 6
ARTICLES = ("the", "a", "an")
# Titles that are ordinary words, phrases or character names: never matched in free text.
AMBIGUOUS = {
    "up", "it", "us", "her", "big", "moon", "saw", "cars", "elf", "rush", "ghost", "signs",
    "speed", "heat", "drive", "network", "contact", "glory", "splash", "casino", "arrival",
    "twister", "babe", "batman", "superman", "joker", "alien", "aliens", "frozen", "psycho",
    "scream", "prisoners", "halloween", "logan", "carrie", "get out", "inside out", "home alone",
    "up in the air", "ring", "thing", "rock", "mask", "mummy", "terminal", "fugitive",
    "birds", "sting", "apartment", "conversation", "notebook", "seven", "coco",
}
_ITEM_LINE = re.compile(r"^\s*(?:\d{1,2}\s*[.):]|[-*\u2022])\s*(.+?)\s*$")
_SPAN = re.compile(r"\*\*(.+?)\*\*|\"(.+?)\"|\u201c(.+?)\u201d")
_TITLE_END = re.compile(r"\s[-\u2013\u2014]\s|:\s|\s\(|,|\*\*|\"|\u201d|\s+by\s")
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def fold(text: str) -> str:
    """Accents stripped, '&' -> ' and ', apostrophes removed; case kept."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("&", " and ")
    return re.sub(r"['\u2019\u2018`]", "", text)


def tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(fold(text))]


def normalize(title: str) -> str:
    """Canonical form of a title: folded, lower case, words joined by spaces, no article."""
    toks = tokens(title)
    if len(toks) > 1 and toks[0] in ARTICLES:
        toks = toks[1:]
    return " ".join(toks)


def within_one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein (optimal alignment) distance of a and b is at most 1."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (len(diff) == 2 and diff[1] == diff[0] + 1
                and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


@dataclass(frozen=True)
class Hit:
    key: str       # normalised catalogue title
    start: int     # token index in the text where it was found
    exact: bool
    item: bool     # found as a list item (not in free text)


class TitleMatcher:
    """Finds the titles of one catalogue in text."""

    def __init__(self, titles: Iterable[str]) -> None:
        self.keys: dict[tuple[str, ...], str] = {}
        self.by_shape: dict[tuple[int, int], list[tuple[str, str]]] = {}
        for title in titles:
            key = normalize(title)
            toks = tuple(key.split())
            self.keys[toks] = key
            flat = "".join(toks)
            if len(flat) >= FUZZY_MIN_CHARS:
                self.by_shape.setdefault((len(toks), len(flat)), []).append((flat, key))
        self.max_len = max((len(k) for k in self.keys), default=1)

    @staticmethod
    def ambiguous(key: str) -> bool:
        return key in AMBIGUOUS or len(key.replace(" ", "")) <= 3 or key.isdigit()

    def _at(self, toks: list[str], i: int, n: int) -> tuple[str, bool] | None:
        window = tuple(toks[i: i + n])
        if window in self.keys:
            return self.keys[window], True
        flat = "".join(window)
        for length in (len(flat) - 1, len(flat), len(flat) + 1):
            for cand, key in self.by_shape.get((n, length), []):
                if within_one_edit(flat, cand):
                    return key, False
        return None

    def longest_prefix(self, toks: list[str]) -> tuple[str, int, bool] | None:
        """(key, tokens used, exact) of the longest title starting `toks` (article skipped)."""
        start = 1 if len(toks) > 1 and toks[0] in ARTICLES else 0
        for offset in dict.fromkeys((0, start)):
            for n in range(min(self.max_len, len(toks) - offset), 0, -1):
                got = self._at(toks, offset, n)
                if got:
                    return got[0], offset + n, got[1]
        return None

    def match_item(self, item: str) -> str | None:
        """The catalogue title an item names, or None."""
        item = item.strip().strip("*").strip()
        span = _SPAN.match(item)
        if span:
            item = next(g for g in span.groups() if g)
        head = _TITLE_END.split(item, maxsplit=1)[0]
        toks, head_toks = tokens(item), tokens(head)
        if not toks:
            return None
        got = self.longest_prefix(toks)
        if got is None:
            return None
        key, used, _ = got
        if self.ambiguous(key):
            # The whole title part must be this title (minus an article).
            head_key = normalize(" ".join(head_toks))
            if head_key != key and not (len(head_key) >= FUZZY_MIN_CHARS
                                        and within_one_edit(head_key, key)):
                return None
        return key

    def find_free(self, text: str) -> list[Hit]:
        """Titles mentioned in running text (capitalised, not ambiguous)."""
        raw = _TOKEN.findall(fold(text))
        toks = [t.lower() for t in raw]
        hits, i = [], 0
        while i < len(toks):
            found = None
            for n in range(min(self.max_len, len(toks) - i), 0, -1):
                got = self._at(toks, i, n)
                if got:
                    found = (got, n)
                    break
            if found is None:
                i += 1
                continue
            (key, exact), n = found
            cap = raw[i][0].isupper() or raw[i][0].isdigit()
            if cap and not self.ambiguous(key):
                hits.append(Hit(key, i, exact, False))
            i += n
        return hits

    def find(self, text: str) -> list[str]:
        """Distinct catalogue titles (normalised keys) in a generation: items, then free text."""
        out: list[str] = []
        for item in list_items(text):
            key = self.match_item(item)
            if key and key not in out:
                out.append(key)
        for hit in self.find_free(text):
            if hit.key not in out:
                out.append(hit.key)
        return out

    def items(self, text: str) -> list[tuple[str, str | None]]:
        """The generation's list items, each with the title it names (None: not in catalogue)."""
        return [(item, self.match_item(item)) for item in list_items(text)]


def list_items(text: str) -> list[str]:
    """Numbered/bulleted lines; in a generation without them, quoted or bold spans."""
    lines = [m.group(1) for m in map(_ITEM_LINE.match, text.splitlines()) if m]
    items = [x for x in lines if tokens(x)]
    if items:
        return items
    return [next(g for g in m.groups() if g) for m in _SPAN.finditer(text)]
