"""Small catalogues written to tmp dirs for the recommender tests."""

from __future__ import annotations

import csv
from pathlib import Path

from aglora.recommend.catalog import load_catalog


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["title", "year", "genres", "director", "cast"])
        w.writerows(rows)
    return path


def small_catalog(tmp_path: Path, extra: list[list[str]] | None = None):
    rows = [[m.title, str(m.year), ";".join(m.genres), ";".join(m.directors), ";".join(m.cast)]
            for m in load_catalog().movies[:24]]
    rows += [["Heat", "1995", "Crime;Thriller", "Michael Mann", "Al Pacino"]] if not any(
        r[0] == "Heat" for r in rows) else []
    return load_catalog(write_csv(tmp_path / "small.csv", rows + (extra or [])))
