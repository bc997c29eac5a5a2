"""benchmarks/relearn_table.py: one row per run from its metrics.json and train_history.json,
the curve's checkpoints in the header, the figure, and a bad directory refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark


def _module():
    return load_benchmark("relearn_table")


def _curve(shares: list[float]) -> list[dict]:
    return [{"steps": k, "known_accuracy": 0.2 + 0.8 * s, "recovered_share": s,
             "recovered_share_margin": 2 * s} for k, s in zip((5, 20), shares, strict=True)]


def _fake_run(run: Path, attacks: bool = True) -> Path:
    run.mkdir(parents=True)
    splits = {s: {"known_accuracy": {"base": 1.0, "after": a}}
              for s, a in (("forget", 0.2), ("neighbor", 0.9), ("utility", 0.95))}
    metrics = {"splits": splits, "kl_neighbor": 0.03,
               "verdict": {"forgetting": {"label": "forgotten"}, "kept": {"label": "kept"}}}
    if attacks:
        metrics["relearn"] = {"curve": _curve([0.25, 0.5])}
        metrics["relearn_benign"] = {"curve": _curve([0.05, 0.1])}
        metrics["relearn_in_context"] = {"known_accuracy": {"after_with_context": 0.6},
                                         "recovered_share": 0.5}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "train_history.json").write_text(json.dumps({"steps": 16, "stopped_early": True}))
    return run


def test_rows_hold_each_runs_numbers(tmp_path, capsys):
    mod = _module()
    a, b = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b", attacks=False)
    out = tmp_path / "curves.png"
    assert mod.main([str(a), str(b), "--labels", "with,without", "--figure", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "after 5 / 20 steps" in lines[0]
    assert lines[2] == ("| with | 16 (goal) | 0.200 | 0.900 | 0.950 | 0.0300 | forgotten; kept | "
                        "0.40 / 0.60 | 25 % (50 %) / 50 % (100 %) | 5 % / 10 % | 0.60, 50 % |")
    assert lines[3].startswith("| without | 16 (goal) |") and lines[3].endswith("| – | – | – | – |")
    assert out.stat().st_size > 0


def test_a_directory_without_metrics_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _module().main([str(tmp_path)])
    assert exc.value.code == 2
    assert "no metrics.json" in capsys.readouterr().err
