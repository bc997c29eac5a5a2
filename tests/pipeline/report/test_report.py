"""Report writer on a fake run directory (no model needed)."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aglora.pipeline.report import write_report
from aglora.pipeline.report.sections import leaks, truncate, verdict
from aglora.runtime.format import human_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_LAYERS, D_FF = 4, 64


def _group(acc_after: float, leak_after: float, n_gen: int = 6) -> dict:
    return {"n": 4, "n_choice": 4, "n_known": 3, "skipped_no_choice": 0, "chance": 0.25,
            "known_accuracy": {"base": 1.0, "after": acc_after, "after_ci95": [0.0, 0.5]},
            "accuracy_all": {"base": 0.75, "after": acc_after * 0.75},
            "margin": {"base": 2.1, "after": -1.3}, "answer_logprob_drop": 5.2,
            "truth_ratio": {"base": 0.2, "after": 1.4},
            "leak_rate": {"base": 0.8 if n_gen else math.nan,
                          "after": leak_after if n_gen else math.nan, "n_generations": n_gen},
            "skipped_no_leak_patterns": 0}


def _metrics(degenerate: bool = False, forget_acc: float = 0.0, forget_leak: float = 0.0) -> dict:
    forget = _group(forget_acc, forget_leak)
    neighbor = _group(0.95, 0.0)
    utility = _group(1.0, math.nan, n_gen=0)
    return {
        "splits": {"forget": forget, "neighbor": neighbor, "utility": utility},
        "families": {"forget/direct": forget, "forget/paraphrase": _group(0.3, 0.1),
                     "neighbor/same-answer": neighbor, "utility/tofu-world-facts": utility},
        "distinct2": {"base": 0.61, "after": 0.60}, "repetition": {"base": 0.02, "after": 0.03},
        "kl_neighbor": 0.004, "kl_utility": math.nan,
        "verdict": {"degenerate": degenerate,
                    "reasons": ["neighbour distinct-2 fell from 0.61 to 0.10"] if degenerate
                    else [],
                    "thresholds": {"distinct2_ratio": 0.5}},
        "concept": "inception", "model": "SmolLM2-135M-Instruct (embedded)",
        "trainable_params": 169000, "effective_params": 40000, "base_params": 134515008,
        "trainable_share": 0.00126, "adapter_bytes": 700000, "train_steps": 12,
        "stopped_early": True,
        "wall_seconds": {"record": 10.2, "score": 0.1, "mask": 0.05, "train": 40.3, "eval": 90.0},
        "relearn": {"steps": 20, "recovered_share": 0.3},
    }


def _probe(i: int, split: str, family: str, base_gen: str, after_gen: str) -> dict:
    return {"id": f"p{i}", "split": split, "family": family, "format": "chat",
            "prompt": f"Question {i} <b>about</b> the film & its director?", "prefix": "",
            "answer": "Christopher Nolan", "distractors": ["A", "B", "C"],
            "leak_patterns": ["incep", "cobb"],
            "base_scores": [-1.0, -3.0, -4.0, -5.0], "after_scores": [-6.0, -3.0, -4.0, -5.0],
            "base_generations": [base_gen, "sample"], "after_generations": [after_gen, "sample"]}


def _fake_run(tmp_path: Path, metrics: dict, optional: bool = True) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    probes = [_probe(0, "forget", "direct", "Inception, with Cobb. " + "x" * 300, "I don't know."),
              _probe(1, "forget", "paraphrase", "It is INCEPTION.", "A film about <script>."),
              _probe(2, "forget", "fill-in", "inception", "nothing"),
              _probe(3, "neighbor", "same-answer", "Memento", "Memento | Nolan")]
    (run / "probe_results.jsonl").write_text(
        "\n".join(json.dumps(p) for p in probes) + "\n", encoding="utf-8")
    (run / "masks.json").write_text(json.dumps({
        "n_selected": 5, "n_total": N_LAYERS * D_FF, "n_layers": N_LAYERS, "d_ff": D_FF,
        "per_layer": {"0": 0, "1": 3, "2": 2, "3": 0},
        "selected": {"1": [1, 30, 63], "2": [5, 40]}}), encoding="utf-8")
    (run / "config.yaml").write_text("name: test\nconcept: ./nowhere.yaml\n", encoding="utf-8")
    if optional:
        g = torch.Generator().manual_seed(0)
        names = ("score", "saliency_forget", "saliency_retain", "fisher_forget",
                 "fisher_retain", "contrast")
        save_file({k: torch.rand(N_LAYERS, D_FF, generator=g) for k in names},
                  str(run / "scores.safetensors"))
        history = [{"step": s, "loss": 1.0 / s, "forget_loss": 2.0 / s, "retain_loss": 0.1,
                    "retain_kl": 0.01 * s, "train_forget_accuracy": 1.0 - s / 10,
                    "train_forget_margin": 2.0 - s} for s in range(1, 6)]
        (run / "train_history.json").write_text(json.dumps({
            "steps": 5, "stopped_early": True, "seconds": 3.0, "history": history}),
            encoding="utf-8")
    return run


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
    run = _fake_run(tmp_path, _metrics())
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
        assert "Forgotten." in text and "Not forgotten" not in text
        assert "DEGENERATE" not in text
        assert "Relearning attack" in text and "683.6 KiB" in text
    assert "<strong>Forgotten.</strong>" in html_text
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
    run = _fake_run(tmp_path, _metrics(degenerate=True, forget_acc=0.0, forget_leak=0.0))
    md, html_path = write_report(run)
    html_text = html_path.read_text(encoding="utf-8")
    for text in (md.read_text(encoding="utf-8"), html_text):
        assert "DEGENERATE" in text
        assert "Forgotten." not in text
        assert "distinct-2 fell from 0.61 to 0.10" in text
    assert "<strong>DEGENERATE.</strong>" in html_text


def test_not_forgotten(tmp_path: Path) -> None:
    label, _ = verdict(_metrics(forget_acc=0.8, forget_leak=0.0))
    assert label == "Not forgotten"
    label, _ = verdict(_metrics(forget_acc=0.3, forget_leak=0.5))
    assert label == "Not forgotten"
    label, _ = verdict(_metrics(forget_acc=0.3, forget_leak=0.1))
    assert label == "Forgotten"


def test_missing_optional_inputs(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, _metrics(), optional=False)
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
    assert "Forgotten." in md_text


def test_only_metrics(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics()), encoding="utf-8")
    md, html_path = write_report(run)
    md_text = md.read_text(encoding="utf-8")
    assert "probe_results.jsonl not found" in md_text
    assert "masks.json not found" in md_text and "config.yaml not found" in md_text
    _assert_self_contained(html_path.read_text(encoding="utf-8"))


def test_missing_metrics_is_an_error(tmp_path: Path) -> None:
    from aglora.errors import AgloraError

    with pytest.raises(AgloraError):
        write_report(tmp_path)


def test_helpers() -> None:
    assert human_bytes(700000) == "683.6 KiB"
    assert human_bytes(512) == "512 B"
    assert leaks("Dom COBB", ["cobb"]) and not leaks("nothing", ["cobb"])
    assert leaks("a (b", ["(b"])  # invalid regex falls back to a substring test
    assert truncate("a" * 500).endswith("…") and len(truncate("a" * 500)) == 160
