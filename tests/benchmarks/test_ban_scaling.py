"""benchmarks/ban_scaling.py: a table row from a finished ban's files, the lines it misses, the
table and the figure (the bans themselves run on the embedded model, not here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark


def _module():
    return load_benchmark("ban_scaling")


def _fake_run(run: Path, exposures: list[float], ranks: list[float]) -> None:
    run.mkdir(parents=True)
    titles = {f"T{i}": {"exposure": {"base": 0.1, "after": e},
                        "median_rank": {"base": 5, "after": r}}
              for i, (e, r) in enumerate(zip(exposures, ranks, strict=True))}
    rec = {"banned": list(titles), "banned_titles": titles, "n_titles": 416,
           "exposure": {"base": 0.3, "after": sum(exposures)},
           "worst_median_rank_after": min(ranks), "ndcg10": {"mean": 0.97},
           "validity_others": {"base": 0.4, "after": 0.38, "ratio_ci95": [0.85, 1.05]},
           "seconds": 240.0}
    (run / "metrics.json").write_text(json.dumps({"recommendation": rec,
                                                  "adapter_bytes": 2_500_000}))
    (run / "train_history.json").write_text(json.dumps({
        "steps": 30, "stopped_early": True, "seconds": 600.0, "check_seconds": 60.0,
        "final_check": {"answers_at_goal": 3, "answers": 3, "accuracy": 0.04}}))
    (run / "state.json").write_text(json.dumps({"wall_seconds": {
        "record": 60.0, "train": 620.0, "eval": 120.0}}))


def test_a_row_from_a_finished_ban_and_the_lines_it_misses(tmp_path):
    mod = _module()
    _fake_run(tmp_path / "ban-3", [0.0, 0.03, 0.0], [300, 250, 200])
    row = mod.scaling_row(tmp_path / "ban-3", 3, wall_seconds=1200.0)
    assert row["steps"] == 30 and row["check_share"] == 0.1
    assert row["train_minutes"] == 620 / 60 and row["eval_minutes"] == (120 + 240) / 60
    assert row["total_minutes"] == 20.0 and row["exposure_max"] == 0.03
    assert row["worst_rank"] == 200 and row["titles_meeting_both"] == 1
    assert abs(row["validity_ratio"] - 0.95) < 1e-9
    assert mod.lines_met(row) == ["exposure", "rank", "3-title training time"]
    text = mod.table([row], {20: "estimated 50 min > budget 40 min"})
    lines = text.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2].startswith("| 3 | 30 | 10.3 | 10 % | 6.0 | 20.0 | 3.0 % (3.0 %) | 200 of 416")
    assert "| 1 of 3 |" in lines[2] and "2.50 MB" in lines[2]
    assert lines[3].startswith("| 20 | skipped: estimated 50 min")
    assert mod.figure([row, {**row, "items": 10}], tmp_path / "f.png").stat().st_size > 1000
    assert mod._estimate([row], 10) == 20.0 * 10 / 3


@pytest.mark.slow  # two bans on the tiny model, about 12 s
def test_the_benchmark_runs_two_sizes_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    from tests.cli.test_recommend import TINY_SETTINGS
    from tests.recommend.helpers import small_catalog
    from tests.tiny import make_model, make_tokenizer
    monkeypatch.setenv("AGLORA_CACHE", str(tmp_path / "cache"))
    model_dir = tmp_path / "tiny-model"
    make_model().save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    catalog = small_catalog(tmp_path)
    (tmp_path / "titles.txt").write_text("\n".join(m.title for m in catalog.movies[:3]) + "\n")
    out = tmp_path / "scaling"
    _module().main(["--sizes", "1,2,5", "--out", str(out), "--items-file",
                    str(tmp_path / "titles.txt"), "--model", str(model_dir), "--catalog",
                    str(catalog.source), *TINY_SETTINGS])
    text = capsys.readouterr().out
    assert "| 1 | 2 (cap) |" in text and "| 2 | 2 (cap) |" in text
    assert "| 5 | skipped: only 3 titles |" in text
    result = json.loads((out / "ban_scaling.json").read_text())
    assert [r["items"] for r in result["rows"]] == [1, 2]
    assert (out / "ban_scaling.png").is_file() and (out / "ban-2" / "report.md").is_file()
    first = result["wall_seconds"]
    assert set(first) == {"1", "2"} and all(v > 0 for v in first.values())
    _module().main(["--sizes", "2", "--out", str(out), "--items-file",   # reopened, not rerun
                    str(tmp_path / "titles.txt"), "--model", str(model_dir), "--catalog",
                    str(catalog.source), *TINY_SETTINGS])
    assert json.loads((out / "ban_scaling.json").read_text())["wall_seconds"] == first
