"""`aglora ban` and `aglora recommend` (aglora.cli.recommend): clean errors, and a ban end to end
on a tiny model."""

from __future__ import annotations

import json

from aglora.cli import main
from aglora.concepts import load_concept
from tests.recommend.helpers import small_catalog, write_csv
from tests.tiny import make_model, make_tokenizer


def test_cli_ban_errors(capsys, tmp_path):
    assert main(["ban", "--out", str(tmp_path / "r")]) == 2
    assert "ban list is empty" in capsys.readouterr().err
    assert main(["ban", "--item", "The Matrx", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'The Matrix'" in capsys.readouterr().err
    bad = write_csv(tmp_path / "c.csv", [["X", "1999", "Drama", "D", "C", "extra"]])
    assert main(["ban", "--item", "X", "--catalog", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "c.csv:2: expected 5 fields" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


TINY_SETTINGS = ["--set", "recommend.n_train_prompts=4", "--set", "recommend.n_eval_prompts=3",
                 "--set", "recommend.n_rank_prompts=2", "--set", "recommend.n_samples=1",
                 "--set", "recommend.max_new_tokens=6", "--set", "recommend.pool_size=6",
                 "--set", "train.max_steps=2", "--set", "train.min_steps=2",
                 "--set", "eval.include_tofu=false",
                 "--set", "mask.k=8", "--set", "eval.max_new_tokens=4",
                 "--set", "eval.n_samples=1"]


def test_ban_end_to_end_on_tiny_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AGLORA_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    catalog = small_catalog(tmp_path)
    cat = str(catalog.source)
    first = catalog.movies[0].title
    a, b = tmp_path / "ban-a", tmp_path / "ban-b"
    common = ["--catalog", cat, "--model", str(model_dir), *TINY_SETTINGS]
    (tmp_path / "bans.txt").write_text(f"# two titles\n\n{catalog.movies[3].title}\n")
    assert main(["ban", "--item", first, "--items-file", str(tmp_path / "bans.txt"),
                 "--out", str(a), *common]) == 0
    hist = json.loads((a / "train_history.json").read_text())
    assert 0 < hist["check_seconds"] < hist["seconds"] and hist["step_seconds"] > 0
    assert hist["final_check"]["items"] > 0  # ban.yaml: a full check after the last step
    concept = load_concept(a / "ban" / "concept.yaml")
    assert {p.answer for p in concept.forget} >= {first, catalog.movies[3].title}
    assert first not in {p.answer for p in concept.retain}
    rec = json.loads((a / "metrics.json").read_text())["recommendation"]
    assert rec["banned"] == [first, catalog.movies[3].title]
    assert rec["n_titles"] == len(catalog) and rec["n_rank_prompts"] <= 2
    assert 0 <= rec["ndcg10"]["mean"] <= 1 + 1e-9
    report = (a / "report.md").read_text()
    assert "Recommendation" in report and "### Each banned title" in report
    assert "early-stopping checks" in report
    assert list((tmp_path / "cache" / "recommend").glob("base-*.json"))
    assert main(["ban", "--item", catalog.movies[5].title, "--out", str(b), "--combine-with",
                 str(a), *common]) == 0
    inter = json.loads((b / "metrics.json").read_text())["recommendation"]["interference"]
    assert inter["other_banned"] == rec["banned"] and isinstance(inter["interferes"], bool)
    assert "Two bans loaded together" in (b / "report.md").read_text()
    capsys.readouterr()
    assert main(["recommend", "--adapter", str(a), "Recommend five films.",
                 "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("base") and line.rstrip().endswith("after") for line in lines)


def test_cli_ban_items_file_refusals(capsys, tmp_path):
    """A list file with a slip is one `aglora: error:` line, exit 2, and nothing written."""
    out = tmp_path / "r"
    cases = [("# nothing here\n\n", "lists no title"),
             ("The Matrix\nThe Matrx\n", "bans.txt:2: 'The Matrx' is not in the catalogue"),
             ("The Matrix\n\nStar Wars\nThe Matrix\n", "bans.txt:4: 'The Matrix' is asked twice")]
    for text, message in cases:
        (tmp_path / "bans.txt").write_text(text)
        assert main(["ban", "--items-file", str(tmp_path / "bans.txt"), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("aglora: error:") and message in err[0]
    assert main(["ban", "--items-file", str(tmp_path / "none.txt"), "--out", str(out)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert not out.exists()
