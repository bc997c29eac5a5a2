"""Report sections (aglora.pipeline.report.sections): the verdict and answer truncation."""

from __future__ import annotations

from pathlib import Path

from aglora.pipeline.report.sections import truncate, verdict
from tests.pipeline.report.fakes import fake_metrics


def test_not_forgotten(tmp_path: Path) -> None:
    label, _ = verdict(fake_metrics(forget_acc=0.8, forget_leak=0.0))
    assert label == "Not forgotten (the forget split as a whole); kept"
    label, _ = verdict(fake_metrics(forget_acc=0.3, forget_leak=0.5))
    assert label == "Not forgotten (the forget split as a whole); kept"
    label, _ = verdict(fake_metrics(forget_acc=0.3, forget_leak=0.1))
    assert label == "Forgotten; kept"


def test_truncate() -> None:
    assert truncate("a" * 500).endswith("…") and len(truncate("a" * 500)) == 160


def test_answers_section_tables_the_shares_and_draws_the_families(tmp_path: Path) -> None:
    from aglora.pipeline.report.document import Figure, Table, render_markdown
    from aglora.pipeline.report.sections import answers_section

    def group(base: dict, after: dict) -> dict:
        full = dict.fromkeys(("leak", "mangled", "refusal", "looping", "other"), 0.0)
        return {"base": {"n_generations": 4, "shares": {**full, **base}, "distinct2": 0.9,
                         "repetition": 0.0},
                "after": {"n_generations": 4, "shares": {**full, **after}, "distinct2": 0.8,
                          "repetition": 0.1}}
    forget = {**group({"leak": 1.0}, {"refusal": 0.75, "mangled": 0.25}),
              "base_nll": {"base": 1.5, "after": 2.25}}
    metrics = {"answers": {
        "splits": {"forget": forget, "neighbor": group({"other": 1.0}, {"refusal": 0.25,
                                                                        "other": 0.75})},
        "families": {"forget/direct": forget}}}
    blocks = answers_section(metrics, tmp_path)
    shares = next(b for b in blocks if isinstance(b, Table))
    assert shares.rows[0] == ["forget", "4", "100.0 % → 0.0 %", "0.0 % → 25.0 %",
                              "0.0 % → 75.0 %", "0.0 % → 0.0 %", "0.0 % → 0.0 %"]
    assert shares.rows[1][4] == "0.0 % → 25.0 %"      # over-refusal on the neighbours
    assert "1.50 → 2.25" in render_markdown(blocks)
    assert any(isinstance(b, Figure) for b in blocks) and (tmp_path / "answers.png").is_file()
    assert "Skipped" in render_markdown(answers_section({}, tmp_path))
