"""Report sections (aglora.pipeline.report.sections): the verdict and answer truncation."""

from __future__ import annotations

from pathlib import Path

from aglora.pipeline.report.sections import truncate, verdict
from tests.pipeline.report.fakes import fake_metrics, fake_robustness


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


def test_relearn_section_tables_every_checkpoint_and_draws_the_curves(tmp_path: Path) -> None:
    from aglora.pipeline.report.document import Figure, Table
    from aglora.pipeline.report.sections import relearn_section

    blocks = relearn_section(fake_robustness(), tmp_path)
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert [r[0] for r in table.rows] == ["fine-tune", "fine-tune", "benign fine-tune",
                                          "benign fine-tune", "in context"]
    assert table.rows[1][3:] == ["10", "0.20 → 0.60 (base 1.00)", "50 %", "40 %"]
    assert table.rows[2][3:] == ["5", "0.20 → 0.20 (base 1.00)", "0 %", "5 %"]
    assert table.rows[4][1] == "2 known forget facts in the prompt"
    assert table.rows[4][4:] == ["0.20 → 0.80 (base 1.00; base with them 1.00)", "75 %", "60 %"]
    (figure,) = [b for b in blocks if isinstance(b, Figure)]
    assert figure.rel == "figures/relearning.png"
    assert (tmp_path / "relearning.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_relearn_section_skips_cleanly_for_older_metrics(tmp_path: Path) -> None:
    from aglora.pipeline.report.document import Figure, Note, Table, render_markdown
    from aglora.pipeline.report.sections import relearn_section

    assert relearn_section({}, tmp_path) == []  # no attack: no section
    # a single attack from before the curve: one row, no figure
    old = {"relearn": {"steps": 20, "lr": 1e-5, "n_train": 15, "n_held": 46,
                       "known_accuracy": {"base": 1.0, "after": 0.2, "relearned": 0.35},
                       "recovered_share": 0.1875, "recovered_share_margin": 0.24}}
    blocks = relearn_section(old, tmp_path)
    (table,) = [b for b in blocks if isinstance(b, Table)]
    assert table.rows == [["fine-tune", "a quarter of the known forget facts",
                           "the other known forget facts", "20", "0.20 → 0.35 (base 1.00)",
                           "19 %", "24 %"]]
    assert not any(isinstance(b, Figure) for b in blocks)
    assert not (tmp_path / "relearning.png").exists()
    # an attack that could not run is a note, not a row
    failed = relearn_section({"relearn_in_context": {"error": "too few"}}, tmp_path)
    assert not any(isinstance(b, Table) for b in failed)
    assert any(isinstance(b, Note) and "relearn_in_context: too few" in b.text for b in failed)
    assert "Relearning attacks" in render_markdown(failed)


def test_cost_section_gives_the_checks_share_of_training_time() -> None:
    from aglora.pipeline.report.document import render_markdown
    from aglora.pipeline.report.sections import cost_section
    history = {"steps": 10, "seconds": 200.0, "check_seconds": 30.0,
               "final_check": {"met": True, "accuracy": 0.05, "items": 96, "answers": 3,
                               "answers_at_goal": 3}}
    md = render_markdown(cost_section({}, history))
    assert "| early-stopping checks | 30 s of 200 s of training (15 %) |" in md
    assert "3 of 3 answers at the goal, accuracy 0.05 on 96 items" in md
    older = render_markdown(cost_section({}, {"steps": 10, "seconds": 200.0}))
    assert "early-stopping checks" not in older
