"""The titles a ban asks for (aglora.recommend.items): list files, comments, and refusals."""

from __future__ import annotations

import pytest

from aglora.errors import AgloraError
from aglora.recommend.catalog import load_catalog
from aglora.recommend.items import Asked, asked_items, read_items_file, resolve_items


def test_a_list_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "bans.txt"
    path.write_text("\ufeff# licences ending in March\nThe Matrix\n\n   \n  # another comment\n"
                    "  Star Wars  \nthe shining\n", encoding="utf-8")
    asked = read_items_file(path)
    assert [a.title for a in asked] == ["The Matrix", "Star Wars", "the shining"]
    assert [a.where for a in asked] == [f"{path}:2", f"{path}:6", f"{path}:7"]
    both = asked_items(["The Lion King"], path)
    assert both[0] == Asked("The Lion King", "--item") and len(both) == 4
    movies = resolve_items(load_catalog(), both)
    assert [m.title for m in movies] == ["The Lion King", "The Matrix", "Star Wars",
                                         "The Shining"]


def test_a_list_file_is_refused_with_the_line_of_its_slip(tmp_path):
    catalog = load_catalog()
    path = tmp_path / "bans.txt"
    path.write_text("# only comments\n\n")
    with pytest.raises(AgloraError, match=r"bans\.txt: lists no title"):
        read_items_file(path)
    with pytest.raises(AgloraError, match=r"none\.txt: cannot be read"):
        read_items_file(tmp_path / "none.txt")
    path.write_text("The Matrix\nThe Matrx\n")
    with pytest.raises(AgloraError, match=r"bans\.txt:2: 'The Matrx' is not in the catalogue"
                                          r".*'The Matrix'"):
        resolve_items(catalog, asked_items([], path))
    path.write_text("The Matrix\nStar Wars\nthe matrix\n")
    with pytest.raises(AgloraError, match=r"bans\.txt:3: 'the matrix' is asked twice \(also "
                                          r"'The Matrix' at .*bans\.txt:1\)"):
        resolve_items(catalog, asked_items([], path))
    with pytest.raises(AgloraError, match=r"bans\.txt:1: 'The Matrix' is asked twice \(also "
                                          r"'The Matrix' at --item\)"):
        resolve_items(catalog, asked_items(["The Matrix"], path))
    with pytest.raises(AgloraError, match=r"--item: 'Star Wars' is asked twice"):
        resolve_items(catalog, ["Star Wars", "Star Wars"])
    with pytest.raises(AgloraError, match="ban list is empty"):
        resolve_items(catalog, asked_items([], None))
