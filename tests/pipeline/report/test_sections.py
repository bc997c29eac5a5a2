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
