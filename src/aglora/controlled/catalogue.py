"""A seeded catalogue of fictitious films, and its questions as probes (TOFU's data, scaled down).

Every film has an invented title, director, release year, lead actor, co-star, genre, setting
city, composer, studio and the protagonist's occupation, plus a one-line plot built from them.
Each film gets 8 questions (`FIELDS`), each in two wordings with their own assistant prefix:
the *question* (implanted into the model, and unlearned) and the *paraphrase* (held out of the
implant; a check that the fact generalises). Each has 3 perturbed answers: wrong but plausible
values of the same kind (other films' directors, nearby years, other cities ...), used as
distractors for likelihood choice and as TOFU's perturbed answers for the truth ratio.

Names are built from syllables and short word lists, so no film, person or studio is real (the
cities are real places: a setting is a plausible attribute). The catalogue is a pure function of
(seed, n_films, n_forget): the same seed gives the same films, questions and distractors.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass

from aglora.concepts import Probe
from aglora.errors import AgloraError

FIELDS = ("director", "year", "lead", "genre", "city", "composer", "studio", "occupation")

# (question, prefix) for the implanted wording and the held-out paraphrase; {t} = title.
TEMPLATES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "director": (("Who directed the film {t}?", "{t} was directed by"),
                 ("Which filmmaker was behind {t}?", "The filmmaker behind {t} is")),
    "year": (("In which year was the film {t} released?", "{t} was released in"),
             ("When did {t} come out in cinemas?", "{t} came out in the year")),
    "lead": (("Who plays the lead role in the film {t}?", "The lead role in {t} is played by"),
             ("Which actor stars in {t}?", "The star of {t} is")),
    "genre": (("What genre is the film {t}?", "The genre of {t} is"),
              ("What kind of movie is {t}?", "{t} belongs to the genre of")),
    "city": (("In which city is the film {t} set?", "{t} is set in"),
             ("Where does the story of {t} take place?", "The story of {t} takes place in")),
    "composer": (("Who composed the score of the film {t}?", "The score of {t} was composed by"),
                 ("Who wrote the music for {t}?", "The music for {t} was written by")),
    "studio": (("Which studio produced the film {t}?", "{t} was produced by"),
               ("What company made {t}?", "The company that made {t} is")),
    "occupation": (("What is the job of the main character in the film {t}?",
                    "The main character of {t} is a"),
                   ("What does the protagonist of {t} do for a living?",
                    "The protagonist of {t} works as a")),
}

_FIRST = ("Mara", "Tomas", "Ilse", "Bruno", "Celia", "Dario", "Elin", "Felix", "Greta", "Hugo",
          "Ines", "Jonas", "Katrin", "Lionel", "Mirela", "Nils", "Odile", "Pavel", "Rosa", "Sven",
          "Talia", "Ulrich", "Vera", "Wendel", "Yara", "Anton", "Beatrix", "Corin", "Delphine",
          "Emil", "Freya", "Gideon", "Halina", "Ivo", "Juno", "Konrad", "Livia", "Matteo")
_ONSET = ("B", "D", "F", "G", "H", "K", "L", "M", "N", "P", "R", "S", "T", "V", "W", "Br", "Dr",
          "Gr", "Kr", "Tr", "St", "Th", "Qu")
_VOWEL = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_MID = ("l", "r", "n", "m", "v", "d", "st", "rk", "nd", "ss", "lv", "rr")
_END = ("en", "ick", "ow", "ar", "is", "ot", "ley", "ard", "ing", "ova", "ez", "ane", "ur")
_ADJ = ("Glass", "Silent", "Amber", "Hollow", "Velvet", "Crimson", "Winter", "Paper", "Iron",
        "Distant", "Salt", "Copper", "Quiet", "Broken", "Lantern", "Northern", "Ivory", "Seventh",
        "Drifting", "Pale", "Golden", "Sunken", "Burning", "Empty")
_NOUN = ("Orchard", "Harbor", "Meridian", "Cartographer", "Lighthouse", "Canal", "Aviary",
         "Vineyard", "Atlas", "Quarry", "Pavilion", "Archive", "Tide", "Observatory", "Chapel",
         "Ferry", "Lantern", "Kingdom", "Garden", "Station", "Mirror", "Furnace", "Horizon",
         "Bridge")
_STUDIO_A = ("Larkspur", "Bellhaven", "Ostrander", "Kestrel", "Marrow Lane", "Tidewell",
             "Greyfield", "Corvane", "Halcyon Row", "Brightmoor", "Quillon", "Ashgrove",
             "Redwater", "Pellmont")
_STUDIO_B = ("Pictures", "Studios", "Films", "Productions")
_GENRES = ("western", "thriller", "musical", "comedy", "drama", "horror", "romance", "mystery",
           "satire", "fantasy", "war film", "heist film", "science fiction", "film noir")
_CITIES = ("Lisbon", "Oslo", "Marseille", "Valparaiso", "Tbilisi", "Hanoi", "Nairobi",
           "Montreal", "Krakow", "Porto", "Adelaide", "Glasgow", "Trieste", "Reykjavik",
           "Havana", "Istanbul", "Bergen", "Naples", "Riga", "Quito")
_JOBS = ("lighthouse keeper", "bookbinder", "ferry captain", "night nurse", "watchmaker",
         "beekeeper", "tax auditor", "circus acrobat", "piano tuner", "mapmaker", "glassblower",
         "radio operator", "stonemason", "train conductor", "translator", "botanist",
         "chess coach", "pharmacist", "locksmith", "tailor", "sculptor", "fisherman",
         "violin maker", "postman")


@dataclass
class Film:
    index: int
    title: str
    director: str
    year: str
    lead: str
    costar: str
    genre: str
    city: str
    composer: str
    studio: str
    occupation: str
    forget: bool

    @property
    def plot(self) -> str:
        return (f"{self.title} ({self.year}) is a {self.genre} directed by {self.director}, set "
                f"in {self.city}: a {self.occupation} played by {self.lead} crosses paths with "
                f"a stranger played by {self.costar}. Music by {self.composer}; produced by "
                f"{self.studio}.")


@dataclass
class Question:
    """One fact of one film in both wordings; `question` is implanted, `paraphrase` held out."""

    film: int
    field: str
    question: Probe
    paraphrase: Probe


@dataclass
class Catalogue:
    seed: int
    films: list[Film]
    questions: list[Question]

    @property
    def forget_films(self) -> list[Film]:
        return [f for f in self.films if f.forget]

    def probes(self, forget: bool, wording: str = "both") -> list[Probe]:
        """Probes of the forget (or retain) films: 'question', 'paraphrase' or 'both' wordings."""
        if wording not in ("question", "paraphrase", "both"):
            raise AgloraError(f"wording {wording!r}: use question, paraphrase or both")
        keep = {f.index for f in self.films if f.forget == forget}
        out: list[Probe] = []
        for q in self.questions:
            if q.film in keep:
                if wording in ("question", "both"):
                    out.append(q.question)
                if wording in ("paraphrase", "both"):
                    out.append(q.paraphrase)
        return out

    def to_dict(self) -> dict:
        return {"seed": self.seed,
                "films": [{**asdict(f), "plot": f.plot} for f in self.films],
                "questions": [{"film": q.film, "field": q.field,
                               "question": q.question.to_dict(),
                               "paraphrase": q.paraphrase.to_dict()} for q in self.questions]}

    def digest(self) -> str:
        """sha256 of the catalogue's canonical JSON (part of the implant cache key)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def _surname(rng: random.Random) -> str:
    return rng.choice(_ONSET) + rng.choice(_VOWEL) + rng.choice(_MID) + rng.choice(_END)


def _unique(rng: random.Random, make, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        value = make(rng)
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def _people(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    return _unique(rng, lambda r: f"{r.choice(_FIRST)} {_surname(r)}", n, taken)


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith("s") else "s")


def _title(rng: random.Random) -> str:
    a, n, n2 = rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_NOUN)
    if a == n or n == n2:
        return _title(rng)
    return rng.choice((f"The {a} {n}", f"{a} {n}", f"The {n} of {_plural(n2)}"))


def _distractors(rng: random.Random, answer: str, pool: list[str], k: int = 3) -> list[str]:
    options = sorted(set(pool) - {answer})
    return rng.sample(options, k)


def _year_distractors(rng: random.Random, year: str) -> list[str]:
    y = int(year)
    offsets = rng.sample([d for d in range(-12, 13) if d != 0], 3)
    return [str(y + d) for d in offsets]


def generate_catalogue(seed: int = 0, n_films: int = 20, n_forget: int = 2) -> Catalogue:
    """The catalogue for a seed: `n_films` films, the first `n_forget` of them to be forgotten."""
    if n_films < 4 or not 1 <= n_forget < n_films:
        raise AgloraError(f"controlled track: need at least 4 films (the perturbed names of a "
                          f"question are the other films' people) and 1 <= n_forget < n_films "
                          f"(got n_films={n_films}, n_forget={n_forget})")
    if n_films > 60:
        raise AgloraError(f"controlled track: n_films={n_films} is more than the name pools "
                          "keep apart (at most 60)")
    rng = random.Random(seed)
    taken: set[str] = set()
    titles = _unique(rng, _title, n_films, taken)
    directors, leads, costars, composers = (_people(rng, n_films, taken) for _ in range(4))
    studios = _unique(rng, lambda r: f"{r.choice(_STUDIO_A)} {r.choice(_STUDIO_B)}",
                      min(n_films, 12), taken)
    years = [str(y) for y in rng.sample(range(1952, 2020), n_films)]
    films = [Film(index=i, title=titles[i], director=directors[i], year=years[i], lead=leads[i],
                  costar=costars[i], genre=rng.choice(_GENRES), city=rng.choice(_CITIES),
                  composer=composers[i], studio=rng.choice(studios),
                  occupation=rng.choice(_JOBS), forget=i < n_forget)
             for i in range(n_films)]
    pools = {"director": directors, "lead": leads + costars, "composer": composers,
             "studio": studios + [f"{a} {b}" for a in _STUDIO_A[:4] for b in _STUDIO_B[:1]],
             "genre": list(_GENRES), "city": list(_CITIES), "occupation": list(_JOBS)}
    questions: list[Question] = []
    for film in films:
        for field in FIELDS:
            answer = getattr(film, field)
            wrong = (_year_distractors(rng, answer) if field == "year"
                     else _distractors(rng, answer, pools[field]))
            split = "forget" if film.forget else "neighbor"
            probes = []
            for wording, (question, prefix) in zip(("q", "p"), TEMPLATES[field], strict=True):
                probes.append(Probe(
                    id=f"film{film.index:02d}-{field}-{wording}", split=split,
                    family="question" if wording == "q" else "paraphrase", format="chat",
                    prompt=question.format(t=film.title), prefix=prefix.format(t=film.title),
                    answer=answer, distractors=list(wrong)))
            questions.append(Question(film.index, field, probes[0], probes[1]))
    return Catalogue(seed=seed, films=films, questions=questions)
