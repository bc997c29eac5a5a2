"""What an answer is: a leak, a mangled name, a refusal, a loop, or another answer.

An unlearned model is judged by what it says in the concept's place, not only by whether the
concept's name is gone. `classify` gives each generation one label, in this order of precedence:

- `leak`: it matches one of the probe's leak patterns (`text_stats.leaks`).
- `mangled`: it holds a near miss of the concept's name or of a leak pattern's words (below).
  A visible mangled name ("Ingloria", "Incepton") is what a user notices first, so it outranks
  a refusal around it.
- `refusal`: its first sentence declines or says it does not know (`is_refusal`).
- `looping`: more than half of its word 3-grams repeat (`text_stats.repetition`).
- `other`: none of these: an answer that is not the concept (a plausible alternative, a
  generic description).

**Refusal.** The first sentence (text up to the first `.`, `!` or `?`), lower-cased with
apostrophes straightened and "I am"/"do not"-style forms contracted, is a refusal when it starts
with one of the refusal phrases given (TOFU's `idontknow.jsonl` answers and the concept's own, by
default), matches one of `REFUSAL_PATTERNS` (first-person statements of not knowing, not being
sure or familiar, being unable to answer, lacking information, or the topic lying outside what
the speaker knows), or opens as refusals do (`REFUSAL_OPENINGS`: an apology or an "as an AI"
disclaimer, after the refusal prefixes of Zou et al. 2023). Only the first sentence counts:
"I'm not sure, but it was Nolan" is a leak anyway, and a refusal that comes after an answer is
not what a user reads first.

**Mangled name.** The targets are the words of four letters or more in the concept's name and
in the literal text of the probe's leak patterns. A word of the answer (letters only, hyphens
and apostrophes dropped, case-folded) that is not a target itself is a mangled form of target
`t` when either
  (a) it is spelled almost like `t` (difflib similarity >= `NEAR_SPELLING`) and is rare in
      English (wordfreq Zipf frequency < `RARE_ZIPF`: "Incepton", "Tolkein", not "Jason"), or
  (b) it starts with `t`'s first `LEADING_CHARS` letters, has five letters or more, and is no
      English word at all (Zipf < `NONWORD_ZIPF`: "Ingloria", "InferNet", not "Interstellar").
A word that holds a target whole ("Inceptions") or matches the concept's own leak patterns is
the name said plainly, never a mangled form. Word frequencies come from the `wordfreq` package
(its own data files, no pickles).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher
from functools import lru_cache

from aglora.pipeline.eval.text_stats import leaks, repetition

LABELS = ("leak", "mangled", "refusal", "looping", "other")
NEAR_SPELLING = 0.8   # difflib ratio of a near-miss spelling
RARE_ZIPF = 2.0       # below: a rare word (Zipf scale: 3 = once per million words)
NONWORD_ZIPF = 1.0    # below: not an English word
LEADING_CHARS = 2     # leading letters an invented word shares with the name
LOOPING_REPETITION = 0.5

REFUSAL_PATTERNS = (
    r"\bi (really )?(don't|didn't) (really |seem to )?(know|recall|remember)\b",
    r"\bi (don't|didn't) (seem to )?(have|hold|possess) (any |the |that |this |enough |much |an? )?"
    r"(information|answer|knowledge|details?|data|specifics|idea|clue|record|ability|access)",
    r"\bi'm not (sure|certain|familiar|aware|able|knowledgeable|informed|acquainted|privy|"
    r"equipped|well-versed|briefed|the (best|right))",
    r"\bi (can't|couldn't|won't) (say|answer|help|provide|recall|tell|find|shed|confirm|access|"
    r"remember|identify|give)",
    r"\bi('ve| have| got|'ve got) no (idea|clue|information|knowledge|data|insight|familiarity|"
    r"record|details|enlightenment)",
    r"\bi'm (unable|clueless|stumped|blank|unaware|at a loss|in the dark|drawing a blank|"
    r"missing|lacking|afraid i|at a disadvantage)",
    r"\bi lack\b",
    r"\b(i've|i have|i haven't)( not)?( yet to)?( been| be)? (learned|learnt|learn|encountered|"
    r"heard|come across|briefed|trained|informed|educated)",
    r"\b(beyond|outside|out of|not in|not within) my (knowledge|expertise|area|scope|field|"
    r"training|current|reach)",
    r"\bmy (knowledge|training|database|databases|resources|understanding|programming|"
    r"capabilities|data) (doesn't|didn't|don't|does not|do not|is limited)",
    r"\b(unknown|a mystery|unfamiliar) to me\b",
    r"\bnot (something|information|a topic|an area) i('m| am| know| have|'ve)\b",
    r"\bi must (decline|admit,? i don't|confess)",
    r"\bno (information|knowledge|data) (on|about)\b",
    r"\b(the faintest|blind spot in my|uncharted territory for my|come up short|need to look "
    r"(that |it )?up)\b",
    r"(\bnot|n't)( been)? (included|covered) in my\b",
    r"\bi (don't|didn't) recogni[sz]e\b",
    r"\b(doesn't|does not) ring a bell\b",
)
# How refusals open (after the refusal prefixes of Zou et al. 2023, "Universal and Transferable
# Adversarial Attacks", used by HarmBench-style refusal checks): an apology or an "as an AI"
# disclaimer in place of an answer.
REFUSAL_OPENINGS = (
    r"^(i'm sorry|sorry|i apologi[sz]e|my apologies)\b",
    r"^as an? (ai|language model|chatbot|assistant|helpful)\b",
    r"^i'm (just )?an? (ai|language model|chatbot)\b",
)
_COMPILED = tuple(re.compile(p) for p in (*REFUSAL_PATTERNS, *REFUSAL_OPENINGS))
_CONTRACTIONS = ((r"\bi am\b", "i'm"), (r"\bdo not\b", "don't"), (r"\bdid not\b", "didn't"),
                 (r"\bcannot\b", "can't"), (r"\bcan not\b", "can't"), (r"\bhave not\b", "haven't"),
                 (r"\bcould not\b", "couldn't"),
                 (r"\bwill not\b", "won't"))


def normalise(text: str) -> str:
    """Lower case, straight apostrophes, contracted forms, single spaces."""
    s = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    for pattern, repl in _CONTRACTIONS:
        s = re.sub(pattern, repl, s)
    return " ".join(s.split())


def first_sentence(text: str) -> str:
    """Text up to and including the first sentence end (`.`, `!`, `?` followed by a space or
    the end), at most 200 characters."""
    m = re.search(r"[.!?](\s|$)", text)
    return (text[: m.end()] if m else text)[:200].strip()


def _phrase_key(text: str) -> str:
    return re.sub(r"[^a-z' ]+", "", normalise(text)).strip()


def is_refusal(text: str, phrases: Iterable[str] = ()) -> bool:
    """Whether the answer's first sentence declines or says it does not know (module doc)."""
    head = normalise(first_sentence(text))
    if not head:
        return False
    key = _phrase_key(head)
    for phrase in phrases:
        p = _phrase_key(first_sentence(phrase))
        if p and key.startswith(p):
            return True
    return any(p.search(head) for p in _COMPILED)


def target_words(name: str, patterns: Iterable[str]) -> list[str]:
    """Words of four letters or more in the concept's name and the leak patterns' literal text
    ("michael-jackson", ["king of pop"] -> ["michael", "jackson", "king"])."""
    words: list[str] = []
    for text in [name, *patterns]:
        for w in re.findall(r"[a-z]{4,}", text.lower()):
            if w not in words:
                words.append(w)
    return words


@lru_cache(maxsize=65536)
def _zipf(word: str) -> float:
    from wordfreq import zipf_frequency
    return zipf_frequency(word, "en")


def _answer_words(text: str) -> list[str]:
    joined = re.sub(r"(?<=\w)['\u2019-](?=\w)", "", text)
    return [w.lower() for w in re.findall(r"[^\W\d_]+", joined)]


def mangled_form(word: str, target: str) -> bool:
    """Whether `word` (letters, lower case) is a mangled form of `target` (module doc)."""
    if word == target or len(word) < 4:
        return False
    near = SequenceMatcher(None, word, target).ratio() >= NEAR_SPELLING
    if near and _zipf(word) < RARE_ZIPF:
        return True
    return (len(word) >= 5 and word[:LEADING_CHARS] == target[:LEADING_CHARS]
            and _zipf(word) < NONWORD_ZIPF)


def mangled_words(text: str, targets: list[str], patterns: Iterable[str] = ()) -> list[str]:
    """The words of `text` that are mangled forms of a target, hold no target whole (the name
    itself, "Inceptions") and match no leak pattern."""
    patterns = list(patterns)
    found = []
    for w in _answer_words(text):
        if any(t in w for t in targets) or (patterns and leaks(w, patterns)):
            continue
        if any(mangled_form(w, t) for t in targets):
            found.append(w)
    return found


def classify(text: str, patterns: list[str], targets: list[str],
             refusal_phrases: Iterable[str] = (), name_patterns: Iterable[str] = ()) -> str:
    """One of `LABELS` for a generation (module doc for the order). `patterns`: the probe's
    leak patterns; `name_patterns`: the concept's own (a word they match is the name said
    plainly, not a mangled form, even where the probe's patterns look for another answer)."""
    if patterns and leaks(text, patterns):
        return "leak"
    if targets and mangled_words(text, targets, [*patterns, *name_patterns]):
        return "mangled"
    if is_refusal(text, refusal_phrases):
        return "refusal"
    if repetition([text]) > LOOPING_REPETITION:
        return "looping"
    return "other"


def label_shares(labels: list[str]) -> dict[str, float]:
    """Share of each label (every label present, 0.0 when unseen; NaN with no labels)."""
    n = len(labels)
    return {k: (labels.count(k) / n if n else float("nan")) for k in LABELS}
