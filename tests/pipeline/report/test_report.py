"""Report writer (aglora.pipeline.report.write_report) on a fake run directory (no model needed)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from aglora.pipeline.report import write_report
from tests.pipeline.report.fakes import PNG_SIGNATURE, fake_metrics, fake_robustness, fake_run


def _images(html_text: str) -> list[bytes]:
    srcs = re.findall(r"<img[^>]*\bsrc=\"([^\"]*)\"", html_text)
    assert len(srcs) == html_text.count("<img")
    out = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def _assert_self_contained(html_text: str) -> None:
    assert 'src="http' not in html_text
    assert "<script" not in html_text
    assert "<link" not in html_text


def _md_figures(run: Path, md_text: str) -> list[str]:
    refs = re.findall(r"\]\((figures/[^)]+)\)", md_text)
    for ref in refs:
        assert (run / ref).is_file(), ref
    return refs


def test_full_report(tmp_path: Path) -> None:
    run = fake_run(tmp_path, fake_metrics())
    md, html_path = write_report(run)
    assert md == run / "report.md" and html_path == run / "report.html"
    assert md.is_file() and html_path.is_file()
    html_text = html_path.read_text(encoding="utf-8")
    md_text = md.read_text(encoding="utf-8")
    _assert_self_contained(html_text)
    images = _images(html_text)
    assert len(images) >= 4
    assert all(img.startswith(PNG_SIGNATURE) for img in images)
    refs = _md_figures(run, md_text)
    assert set(refs) >= {"figures/families.png", "figures/saliency_heatmap.png",
                         "figures/mask_per_layer.png", "figures/training.png"}
    for text in (md_text, html_text):
        assert "Forgotten; kept." in text and "Not forgotten" not in text
        assert "DEGENERATE" not in text
        assert "Relearning attack" in text and "683.6 KiB" in text
    assert "<strong>Forgotten; kept.</strong>" in html_text
    # probe text is escaped, never injected
    assert "&lt;script&gt;" in html_text and "&lt;b&gt;about&lt;/b&gt;" in html_text
    # NaN prints as a dash, never as "nan"
    assert not re.search(r"\bnan\b", md_text, flags=re.IGNORECASE)
    assert "–" in md_text
    # leak marks, answer truncation and the collapsed config
    assert "✗ leak" in md_text and "✓ clean" in md_text
    assert "x" * 200 not in md_text
    assert "<details>" in html_text and "concept: ./nowhere.yaml" in html_text
    assert "config.yaml" in md_text
    # only direct / paraphrase forget probes are shown before/after
    assert "forget/fill-in" not in md_text


def test_degenerate_wins_over_perfect_forgetting(tmp_path: Path) -> None:
    run = fake_run(tmp_path, fake_metrics(degenerate=True, forget_acc=0.0, forget_leak=0.0))
    md, html_path = write_report(run)
    html_text = html_path.read_text(encoding="utf-8")
    for text in (md.read_text(encoding="utf-8"), html_text):
        assert "DEGENERATE" in text
        assert "Forgotten; kept." not in text
        assert "distinct-2 fell from 0.61 to 0.10" in text
    assert "<strong>DEGENERATE.</strong>" in html_text


def test_missing_optional_inputs(tmp_path: Path) -> None:
    run = fake_run(tmp_path, fake_metrics(), optional=False)
    (run / "figures").mkdir()
    md, html_path = write_report(run)
    md_text = md.read_text(encoding="utf-8")
    html_text = html_path.read_text(encoding="utf-8")
    _assert_self_contained(html_text)
    images = _images(html_text)
    assert all(img.startswith(PNG_SIGNATURE) for img in images)
    assert len(images) == 2  # families + mask per layer
    refs = _md_figures(run, md_text)
    assert "figures/saliency_heatmap.png" not in refs
    assert "figures/training.png" not in refs
    assert "scores.safetensors" in md_text and "train_history.json not found" in md_text
    assert "Forgotten; kept." in md_text


def test_only_metrics(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(fake_metrics()), encoding="utf-8")
    md, html_path = write_report(run)
    md_text = md.read_text(encoding="utf-8")
    assert "probe_results.jsonl not found" in md_text
    assert "masks.json not found" in md_text and "config.yaml not found" in md_text
    _assert_self_contained(html_path.read_text(encoding="utf-8"))


def test_missing_metrics_is_an_error(tmp_path: Path) -> None:
    from aglora.errors import AgloraError

    with pytest.raises(AgloraError):
        write_report(tmp_path)


def test_report_draws_the_relearning_curves(tmp_path: Path) -> None:
    run = fake_run(tmp_path, {**fake_metrics(), **fake_robustness()})
    md, html_path = write_report(run)
    md_text, html_text = md.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    assert "figures/relearning.png" in _md_figures(run, md_text)
    assert "benign fine-tune" in md_text and "in context" in md_text
    assert len(_images(html_text)) == len(_md_figures(run, md_text))
    _assert_self_contained(html_text)


def test_report_of_an_old_run_has_no_relearning_figure(tmp_path: Path) -> None:
    metrics = fake_metrics()
    del metrics["relearn"]
    run = fake_run(tmp_path, metrics)
    md, _ = write_report(run)
    md_text = md.read_text(encoding="utf-8")
    assert "Relearning attacks" not in md_text
    assert not (run / "figures" / "relearning.png").exists()
