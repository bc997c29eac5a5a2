"""The film catalogue (aglora.recommend.catalog): the shipped one and bad files."""

from __future__ import annotations

import pytest

from aglora.errors import AgloraError
from aglora.recommend.catalog import BUILTIN_CATALOG, load_catalog
from aglora.recommend.items import resolve_items
from tests.recommend.helpers import small_catalog


def test_shipped_catalogue():
    catalog = load_catalog()
    assert len(catalog) >= 250 and catalog.source == BUILTIN_CATALOG
    m = catalog.resolve("the matrix")
    assert (m.title, m.year, m.directors) == ("The Matrix", 1999,
                                              ("Lana Wachowski", "Lilly Wachowski"))


def test_catalogue_errors(tmp_path):
    with pytest.raises(AgloraError, match="not found"):
        load_catalog(tmp_path / "none.csv")
    good = small_catalog(tmp_path)
    lines = (tmp_path / "small.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:5] + ["The Good, the Bad and the Ugly,1966,Western,Leone,"
                                          "Clint Eastwood"] + lines[5:]) + "\n")
    with pytest.raises(AgloraError, match=r"bad\.csv:6: expected 5 fields.*quote a title"):
        load_catalog(bad)
    bad.write_text("\n".join(lines + ["Tenet2,20x0,Action,Nolan,Someone"]) + "\n")
    with pytest.raises(AgloraError, match=rf"bad\.csv:{len(lines) + 1}: year '20x0'"):
        load_catalog(bad)
    bad.write_text("\n".join(lines + ["the matrix,1999,Action,W,K"]) + "\n")
    with pytest.raises(AgloraError, match=r"duplicate title 'the matrix' \(first on line"):
        load_catalog(bad)
    bad.write_text("name,year\nx,1\n")
    with pytest.raises(AgloraError, match="bad.csv:1: header must be"):
        load_catalog(bad)
    with pytest.raises(AgloraError, match="'The Matrx' is not in the catalogue.*'The Matrix'"):
        good.resolve("The Matrx")
    with pytest.raises(AgloraError, match="ban list is empty"):
        resolve_items(good, [])
