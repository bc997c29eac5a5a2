"""The titles a ban asks for: `--item` values and the lines of an `--items-file`, resolved in the
catalogue.

A list file holds one title per line; blank lines and lines whose first non-blank character is
`#` are skipped (a `#` inside a title is kept: only whole-line comments). Every title must be a
catalogue title, and none may be asked twice, even in another spelling that resolves to the same
film: a ban list with a slip in it is refused whole, with the file and line of the slip, before
anything is written, rather than quietly banning something else or fewer titles than were
listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aglora.errors import AgloraError
from aglora.recommend.catalog import Catalog, Movie


@dataclass(frozen=True)
class Asked:
    """One title as the user gave it, and where: `--item` or `FILE:LINE`."""
    title: str
    where: str


def read_items_file(path: str | Path) -> list[Asked]:
    """The titles of a list file, each with its `FILE:LINE`; an unreadable file or one without a
    title is an `AgloraError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise AgloraError(f"--items-file {path}: cannot be read ({reason})") from None
    out = [Asked(line.strip(), f"{path}:{n}") for n, line in enumerate(text.splitlines(), 1)
           if line.strip() and not line.strip().startswith("#")]
    if not out:
        raise AgloraError(f"--items-file {path}: lists no title (only blank lines and # "
                          "comments); write one catalogue title per line")
    return out


def asked_items(items: list[str] | None, items_file: str | Path | None = None) -> list[Asked]:
    """The `--item` values, then the list file's titles."""
    asked = [Asked(t, "--item") for t in items or []]
    return asked + (read_items_file(items_file) if items_file else [])


def resolve_items(catalog: Catalog, items: list[str] | list[Asked] | None) -> list[Movie]:
    """The catalogue entries of the asked titles, in order; an empty list, a title that is not
    in the catalogue, or a film asked twice is an `AgloraError` naming where it was asked."""
    asked = [a if isinstance(a, Asked) else Asked(a, "--item") for a in items or []]
    if not asked:
        raise AgloraError("the ban list is empty; give at least one --item TITLE or an "
                          "--items-file")
    out: list[Movie] = []
    first: dict[str, Asked] = {}
    for a in asked:
        try:
            movie = catalog.resolve(a.title)
        except AgloraError as e:
            if a.where == "--item":
                raise
            raise AgloraError(f"{a.where}: {e}") from None
        if movie.key in first:
            raise AgloraError(f"{a.where}: {a.title!r} is asked twice (also "
                              f"{first[movie.key].title!r} at {first[movie.key].where}): "
                              f"both are {movie.title!r}; list each title once")
        first[movie.key] = a
        out.append(movie)
    return out
