"""The movie catalogue: load, validate and look up titles.

A catalogue is a CSV file with the header `title,year,genres,director,cast`; list-valued fields
(`genres`, `director`, `cast`) are separated by `;`. The shipped catalogue is
`aglora/data/catalog/movies.csv` (format documented in the README beside it). Every problem is an
`AgloraError` naming the file, the line and the fix: a missing file, a wrong header, a malformed
row, a duplicate title (compared after normalisation, see `matcher.normalize`).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aglora.errors import AgloraError
from aglora.recommend.matcher import normalize

BUILTIN_CATALOG = Path(__file__).resolve().parent.parent / "data" / "catalog" / "movies.csv"
COLUMNS = ("title", "year", "genres", "director", "cast")


@dataclass(frozen=True)
class Movie:
    title: str
    year: int
    genres: tuple[str, ...]
    directors: tuple[str, ...]
    cast: tuple[str, ...]

    @property
    def key(self) -> str:
        return normalize(self.title)


@dataclass
class Catalog:
    movies: list[Movie]
    source: Path

    def __post_init__(self) -> None:
        self._by_key = {m.key: m for m in self.movies}

    def __len__(self) -> int:
        return len(self.movies)

    @property
    def titles(self) -> list[str]:
        return [m.title for m in self.movies]

    def get(self, title: str) -> Movie | None:
        return self._by_key.get(normalize(title))

    def resolve(self, title: str) -> Movie:
        """The catalogue entry for a user-given title, or an error suggesting close matches."""
        if not title or not title.strip():
            raise AgloraError("an empty --item was given; name a catalogue title")
        movie = self.get(title)
        if movie is not None:
            return movie
        keys = list(self._by_key)
        close = difflib.get_close_matches(normalize(title), keys, n=3, cutoff=0.6)
        hint = (f"; did you mean {', '.join(repr(self._by_key[k].title) for k in close)}?"
                if close else "; check the spelling or give your own catalogue with --catalog")
        raise AgloraError(f"{title!r} is not in the catalogue {self.source}{hint}")

    def fingerprint(self) -> str:
        text = "\n".join(f"{m.title}|{m.year}|{';'.join(m.genres)}" for m in self.movies)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(";") if v.strip())


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read a catalogue CSV (default: the shipped one) and validate every row."""
    path = Path(path) if path else BUILTIN_CATALOG
    if not path.is_file():
        raise AgloraError(f"catalogue {path} not found; give a CSV with the header "
                          f"{','.join(COLUMNS)} (see aglora/data/catalog/README.md)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AgloraError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
                          ) from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != list(COLUMNS):
        raise AgloraError(f"{path}:1: header must be exactly {','.join(COLUMNS)}, got "
                          f"{','.join(header or [])!r}")
    movies: list[Movie] = []
    seen: dict[str, int] = {}
    for row in reader:
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) != len(COLUMNS):
            raise AgloraError(f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), "
                              f"got {len(row)}; quote a title that contains a comma, e.g. "
                              '"The Good, the Bad and the Ugly"')
        title, year, genres, director, cast = (c.strip() for c in row)
        if not title or not normalize(title):
            raise AgloraError(f"{where}: empty title; every row needs a title")
        if not year.isdigit() or not 1880 <= int(year) <= 2100:
            raise AgloraError(f"{where}: year {year!r} of {title!r} is not a year; write it as "
                              "four digits, e.g. 1999")
        if not _split(genres):
            raise AgloraError(f"{where}: {title!r} has no genres; list them separated by ';', "
                              "e.g. Action;Sci-Fi")
        key = normalize(title)
        if key in seen:
            raise AgloraError(f"{where}: duplicate title {title!r} (first on line {seen[key]}); "
                              "remove one row or make the titles differ (e.g. add the year)")
        seen[key] = lineno
        movies.append(Movie(title, int(year), _split(genres), _split(director), _split(cast)))
    if len(movies) < 20:
        raise AgloraError(f"{path}: holds {len(movies)} films; a ranking needs at least 20")
    return Catalog(movies, path)
