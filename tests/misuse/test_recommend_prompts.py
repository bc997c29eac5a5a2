"""`aglora ban` and `aglora recommend`: prompts too long for the model's context (a long title or
name in a --catalog, a long request, too many generated tokens) are one line and exit 2 right
after the model loads, before it runs on them; a survey's --out that is a file is refused before
the model loads."""

from __future__ import annotations

from aglora.recommend.catalog import load_catalog
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot
from tests.recommend.helpers import write_csv

LONG = "film " * 700  # about 700 tokens; the tiny model's context is 512


def _catalog(tmp_path, title: str = "Heat", director: str = "Michael Mann"):
    rows = [[m.title, str(m.year), ";".join(m.genres), ";".join(m.directors), ";".join(m.cast)]
            for m in load_catalog().movies[:24] if m.title != "Heat"]
    rows.append([title, "1995", "Crime;Thriller", director, "Al Pacino;Robert De Niro"])
    return write_csv(tmp_path / "catalog.csv", rows)


def _ban(tmp_path, tiny_dir, catalog, *extra: str) -> list[str]:
    return ["ban", "--item", "The Godfather", "--catalog", str(catalog), "--model",
            str(tiny_dir), "--out", str(tmp_path / "ban"), *extra]


def test_a_ban_with_a_catalogue_title_too_long_for_the_context_is_refused(capsys, tmp_path,
                                                                         tiny_dir):
    catalog = _catalog(tmp_path, title="Heat " + LONG)
    before = snapshot(tmp_path)
    refused(capsys, _ban(tmp_path, tiny_dir, catalog), "recommendation prompt",
            "longer than the model's context of 512",
            "shorten the long titles or names in the catalogue (--catalog)")
    assert_nothing_lost(before, tmp_path)
    assert not (tmp_path / "ban" / "ban" / "concept.yaml").exists()  # no spec was built


def test_a_ban_with_a_director_too_long_for_the_context_is_refused(capsys, tmp_path, tiny_dir):
    catalog = _catalog(tmp_path, director=LONG)
    before = snapshot(tmp_path)
    argv = _ban(tmp_path, tiny_dir, catalog)
    argv[2] = "Heat"  # the banned film's fact prompts name its director
    refused(capsys, argv, "fact prompt", "longer than the model's context of 512",
            "shorten the long titles or names in the catalogue")
    assert_nothing_lost(before, tmp_path)
    assert not (tmp_path / "ban" / "ban" / "concept.yaml").exists()


def test_a_ban_generating_more_tokens_than_the_context_is_refused(capsys, tmp_path, tiny_dir):
    catalog = _catalog(tmp_path)
    before = snapshot(tmp_path)
    refused(capsys, _ban(tmp_path, tiny_dir, catalog, "--set", "recommend.max_new_tokens=600"),
            "recommendation prompt 'train-000'", "and 600 generated tokens",
            "longer than the model's context of 512", "or lower recommend.max_new_tokens")
    assert_nothing_lost(before, tmp_path)
    assert not (tmp_path / "ban" / "ban" / "concept.yaml").exists()


def test_a_recommend_request_too_long_for_the_context_is_refused(capsys, tmp_path, tiny_dir):
    before = snapshot(tmp_path)
    refused(capsys, ["recommend", "--adapter", str(tmp_path / "no-ban"), "--model",
                     str(tiny_dir), LONG], "the request 'film film",
            "longer than the model's context of 512", "shorten it, or lower --max-new-tokens")
    refused(capsys, ["recommend", "--adapter", str(tmp_path / "no-ban"), "--model",
                     str(tiny_dir), "--max-new-tokens", "600", "Five films like Heat?"],
            "and 600 generated tokens", "lower --max-new-tokens")
    assert_nothing_lost(before, tmp_path)


def test_a_survey_checks_its_prompts_and_its_out(capsys, tmp_path, tiny_dir):
    (tmp_path / "taken").write_text("mine")
    long_catalog = _catalog(tmp_path, title="Heat " + LONG)
    before = snapshot(tmp_path)
    refused(capsys, ["recommend", "--survey", "--model", str(tmp_path / "no-such-model"),
                     "--out", str(tmp_path / "taken")], "is a file, not a directory")
    refused(capsys, ["recommend", "--survey", "--rank", "--model", str(tiny_dir), "--catalog",
                     str(long_catalog), "--out", str(tmp_path / "survey")],
            "recommendation prompt", "longer than the model's context of 512")
    assert_nothing_lost(before, tmp_path)
    assert not (tmp_path / "survey").exists()
