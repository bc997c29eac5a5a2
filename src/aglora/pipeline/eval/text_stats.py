"""Text statistics of generations: leak matching, distinct-n and repetition.

`leaks` reads each pattern as a case-insensitive regular expression; a pattern that is not a
valid regex (concept specs are checked when loaded, but a probe file or an old run may hold one)
is matched as plain text instead, so evaluation and the report always agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def leaks(text: str, patterns: Iterable[str]) -> bool:
    """Whether `text` matches any of `patterns` (case-insensitive)."""
    for p in patterns:
        try:
            if re.search(p, text, flags=re.IGNORECASE):
                return True
        except re.error:
            if p.lower() in text.lower():
                return True
    return False


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams, pooled over texts (one answer repeated everywhere -> low)."""
    grams = [g for t in texts for g in _ngrams(t.lower().split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(texts: list[str], n: int = 3) -> float:
    """Mean share of repeated n-grams inside each text (loops -> high)."""
    vals = []
    for t in texts:
        grams = _ngrams(t.lower().split(), n)
        if grams:
            vals.append(1 - len(set(grams)) / len(grams))
    return sum(vals) / len(vals) if vals else 0.0
