"""Recommendation prompts (user profiles) and fact prompts about films, generated with a seed.

A *profile prompt* asks for five films given liked films, a mood or a genre, in many phrasings.
Training prompts and held-apart evaluation prompts come from disjoint template pools and
disjoint closing instructions, drawn with separate seeded generators, so no evaluation prompt
repeats a training wording. Each prompt carries the genres of its profile (explicit genre, the
genres a mood maps to, or the genres of the liked films) for the genre-agreement metric.

*Fact prompts* describe one film (year, director, cast, genre) and are answered by its title;
they are the "describes the item" part of a ban's forget set and, for neighbouring films, of its
retain set. Training and evaluation facts use different templates too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aglora.concepts import Probe
from aglora.recommend.catalog import Catalog, Movie

GENRE_WORDS = {"Sci-Fi": "science fiction", "Animation": "animated", "Biography": "biographical",
               "History": "historical", "Family": "family", "Music": "music", "War": "war",
               "Sport": "sports"}
PROFILE_GENRES = ["Action", "Adventure", "Animation", "Comedy", "Crime", "Drama", "Family",
                  "Fantasy", "Horror", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
                  "Western", "Musical", "Biography"]
MOODS = {
    "something that will make me laugh out loud": ["Comedy"],
    "a film that will properly scare me": ["Horror", "Thriller"],
    "something that makes me cry": ["Drama", "Romance"],
    "an adrenaline rush": ["Action", "Thriller"],
    "something mind-bending": ["Sci-Fi", "Mystery"],
    "a cozy film for family night": ["Family", "Animation"],
    "a romantic evening": ["Romance"],
    "an epic adventure": ["Adventure", "Fantasy"],
    "a gripping true story": ["Biography", "History"],
    "a tense crime story": ["Crime", "Thriller"],
    "a classic from before 1970": [],
    "something about space": ["Sci-Fi"],
}
# (template, kind); kinds: liked (1-2 films), one (1 film), genre, mood, genre+one
TRAIN_TEMPLATES = [
    ("I loved {liked}. Recommend five movies I might like.", "liked"),
    ("My favourite films are {liked}. What should I watch next? Give me five titles.", "liked"),
    ("What are five movies for someone who enjoyed {liked}?", "liked"),
    ("I'm in the mood for {mood}. Suggest five movies.", "mood"),
    ("I want {mood} tonight. List five films.", "mood"),
    ("Recommend five good {genre} movies.", "genre"),
    ("List five {genre} movies I should see.", "genre"),
    ("Can you suggest five {genre} films similar to {one}?", "genre+one"),
    ("Suggest five films like {one}.", "one"),
]
EVAL_TEMPLATES = [
    ("Big fan of {liked} here. Which five films would you pick for me next?", "liked"),
    ("Someone who adores {liked} - what five films should they watch?", "liked"),
    ("I just watched {one} and loved it. Five more like it, please.", "one"),
    ("Tonight I feel like {mood}. Which five movies do you recommend?", "mood"),
    ("Movie night: I want {mood}. Pick five titles for me.", "mood"),
    ("Give me five movie recommendations for a fan of {genre} cinema.", "genre"),
    ("Please name five {genre} films worth my time.", "genre"),
    ("Which five films would you recommend to someone who likes {genre} films and liked "
     "{one}?", "genre+one"),
]
TRAIN_SUFFIXES = [" Answer with a numbered list of titles only.", " Reply with a numbered list.",
                  ""]
EVAL_SUFFIXES = [" Just list the titles, numbered.", " Keep it to a numbered list of titles.",
                 ""]


@dataclass
class RecPrompt:
    id: str
    text: str
    split: str                      # train | eval
    kind: str
    liked: list[str] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "split": self.split, "kind": self.kind,
                "liked": self.liked, "genres": self.genres}


def genre_word(genre: str) -> str:
    return GENRE_WORDS.get(genre, genre.lower())


def _liked_genres(movies: list[Movie]) -> list[str]:
    genres = sorted({g for m in movies for g in m.genres})
    specific = [g for g in genres if g != "Drama"]
    return specific or genres


def _make(catalog: Catalog, templates: list, suffixes: list[str], n: int, split: str,
          rng: random.Random) -> list[RecPrompt]:
    out: list[RecPrompt] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        template, kind = templates[len(out) % len(templates)]
        films = rng.sample(catalog.movies, 2)
        n_liked = 1 if kind in ("one", "genre+one") else rng.choice([1, 2])
        liked = films[:n_liked]
        mood = rng.choice(sorted(MOODS))
        genre = (rng.choice(sorted(set(liked[0].genres) & set(PROFILE_GENRES)) or PROFILE_GENRES)
                 if kind == "genre+one" else rng.choice(PROFILE_GENRES))
        text = template.format(liked=" and ".join(m.title for m in liked), one=liked[0].title,
                               mood=mood, genre=genre_word(genre)) + rng.choice(suffixes)
        if text in seen:
            continue
        seen.add(text)
        if kind == "mood":
            genres, titles = MOODS[mood], []
        elif kind in ("genre", "genre+one"):
            genres, titles = [genre], ([liked[0].title] if kind == "genre+one" else [])
        else:
            genres, titles = _liked_genres(liked), [m.title for m in liked]
        out.append(RecPrompt(f"{split}-{len(out):03d}", text, split, kind, titles, genres))
    return out


def make_prompts(catalog: Catalog, n_train: int, n_eval: int, seed: int = 0
                 ) -> tuple[list[RecPrompt], list[RecPrompt]]:
    """(training prompts, held-apart evaluation prompts), deterministic for a seed."""
    train = _make(catalog, TRAIN_TEMPLATES, TRAIN_SUFFIXES, n_train, "train",
                  random.Random(f"{seed}-train"))
    evals = _make(catalog, EVAL_TEMPLATES, EVAL_SUFFIXES, n_eval, "eval",
                  random.Random(f"{seed}-eval"))
    return train, evals


# ---- fact prompts: describe a film, answered by its title -----------------------------------
def _cast(m: Movie, i: int) -> str:
    return m.cast[i] if len(m.cast) > i else m.cast[0] if m.cast else "an ensemble cast"


def _director(m: Movie) -> str:
    return " and ".join(m.directors) if m.directors else "an unknown director"


def _fact_texts(m: Movie, split: str) -> list[tuple[str, str, str]]:
    """(format, prompt, prefix) triples describing `m` without naming it."""
    g = genre_word(m.genres[0])
    if split == "train":
        return [
            ("chat", f"Which {m.year} film was directed by {_director(m)} and starred "
                     f"{_cast(m, 0)}?", "The film is"),
            ("chat", f"Name the movie starring {_cast(m, 0)} and {_cast(m, 1)}, released in "
                     f"{m.year}.", "The movie is"),
            ("completion", f"The {m.year} {g} film directed by {_director(m)} and starring "
                           f"{_cast(m, 0)} is called", ""),
            ("completion", f"{_cast(m, 0)} and {_cast(m, 1)} star in the {m.year} film", ""),
        ]
    return [
        ("chat", f"What film from {m.year} did {_director(m)} direct, with {_cast(m, 0)} in a "
                 "lead role?", "That film is"),
        ("chat", f"I'm thinking of a {g} movie from {m.year} with {_cast(m, 0)}, {_cast(m, 1)} "
                 f"and {_cast(m, 2)}. What is it?", "It is"),
        ("completion", f"In {m.year}, {_director(m)} directed {_cast(m, 0)} in the film", ""),
        ("completion", f"{_director(m)}'s {m.year} {g} movie starring {_cast(m, 1)} is titled",
         ""),
    ]


def distractors_for(m: Movie, catalog: Catalog, rng: random.Random, avoid: set[str],
                    n: int = 3) -> list[str]:
    """`n` other titles sharing a genre with `m` (any title when too few share one)."""
    pool = [x for x in catalog.movies if x.key != m.key and x.key not in avoid
            and set(x.genres) & set(m.genres)]
    if len(pool) < n:
        pool = [x for x in catalog.movies if x.key != m.key and x.key not in avoid]
    return [x.title for x in rng.sample(pool, n)]


def fact_probes(m: Movie, catalog: Catalog, split: str, rng: random.Random, avoid: set[str],
                probe_split: str, family: str) -> list[Probe]:
    """Fact probes answered by `m`'s title (likelihood choice against same-genre titles)."""
    out = []
    for i, (fmt, prompt, prefix) in enumerate(_fact_texts(m, split)):
        out.append(Probe(prompt=prompt, split=probe_split, family=family, format=fmt,
                         id=f"{family}-{m.key.replace(' ', '-')}-{split}-{i}", prefix=prefix,
                         answer=m.title, distractors=distractors_for(m, catalog, rng, avoid)))
    return out


def neighbours(m: Movie, catalog: Catalog, banned: set[str], n: int = 6
               ) -> list[tuple[Movie, str]]:
    """Films close to `m` that must be kept: same director, shared cast, then same genre/era."""
    out: list[tuple[Movie, str]] = []
    used = set(banned) | {m.key}

    def take(cands: list[Movie], family: str, limit: int) -> None:
        for x in cands[:limit]:
            if x.key not in used and len(out) < n:
                out.append((x, family))
                used.add(x.key)

    take([x for x in catalog.movies if set(x.directors) & set(m.directors)], "same-director", 3)
    take([x for x in catalog.movies if set(x.cast) & set(m.cast)], "same-cast", 3)
    same_genre = sorted((x for x in catalog.movies if x.genres[:1] == m.genres[:1]),
                        key=lambda x: (abs(x.year - m.year), x.title))
    take(same_genre, "same-genre", n)
    return out
