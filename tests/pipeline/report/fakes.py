"""A fake run directory for the report tests (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_LAYERS, D_FF = 4, 64


def fake_group(acc_after: float, leak_after: float, n_gen: int = 6) -> dict:
    return {"n": 4, "n_choice": 4, "n_known": 3, "skipped_no_choice": 0, "chance": 0.25,
            "known_accuracy": {"base": 1.0, "after": acc_after, "after_ci95": [0.0, 0.5]},
            "accuracy_all": {"base": 0.75, "after": acc_after * 0.75},
            "margin": {"base": 2.1, "after": -1.3}, "answer_logprob_drop": 5.2,
            "truth_ratio": {"base": 0.2, "after": 1.4},
            "leak_rate": {"base": 0.8 if n_gen else math.nan,
                          "after": leak_after if n_gen else math.nan, "n_generations": n_gen},
            "skipped_no_leak_patterns": 0}


def fake_metrics(degenerate: bool = False, forget_acc: float = 0.0,
                 forget_leak: float = 0.0) -> dict:
    forget = fake_group(forget_acc, forget_leak)
    neighbor = fake_group(0.95, 0.0)
    utility = fake_group(1.0, math.nan, n_gen=0)
    return {
        "splits": {"forget": forget, "neighbor": neighbor, "utility": utility},
        "families": {"forget/direct": forget, "forget/paraphrase": fake_group(0.3, 0.1),
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


def _curve(*points: tuple[int, float, float, float]) -> list[dict]:
    return [{"steps": s, "known_accuracy": a, "margin": 0.0, "recovered_share": r,
             "recovered_share_margin": rm} for s, a, r, rm in points]


def fake_robustness() -> dict:
    """The three attacks' metrics.json keys, with hand numbers."""
    ka = {"base": 1.0, "after": 0.2}
    return {
        "relearn": {"steps": 10, "n_train": 2, "n_held": 6, "known_accuracy": {
            **ka, "relearned": 0.6}, "recovered_share": 0.5, "recovered_share_margin": 0.4,
            "curve": _curve((5, 0.4, 0.25, 0.2), (10, 0.6, 0.5, 0.4))},
        "relearn_benign": {"steps": 10, "n_train": 30, "n_scored": 8, "known_accuracy": {
            **ka, "relearned": 0.3}, "curve": _curve((5, 0.2, 0.0, 0.05), (10, 0.3, 0.125, 0.1))},
        "relearn_in_context": {"n_context": 2, "n_held": 6, "recovered_share": 0.75,
                               "recovered_share_margin": 0.6,
                               "known_accuracy": {**ka, "base_with_context": 1.0,
                                                  "after_with_context": 0.8}},
    }


def fake_probe(i: int, split: str, family: str, base_gen: str, after_gen: str) -> dict:
    return {"id": f"p{i}", "split": split, "family": family, "format": "chat",
            "prompt": f"Question {i} <b>about</b> the film & its director?", "prefix": "",
            "answer": "Christopher Nolan", "distractors": ["A", "B", "C"],
            "leak_patterns": ["incep", "cobb"],
            "base_scores": [-1.0, -3.0, -4.0, -5.0], "after_scores": [-6.0, -3.0, -4.0, -5.0],
            "base_generations": [base_gen, "sample"], "after_generations": [after_gen, "sample"]}


def fake_run(tmp_path: Path, metrics: dict, optional: bool = True) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    probes = [fake_probe(0, "forget", "direct", "Inception, with Cobb. " + "x" * 300,
                         "I don't know."),
              fake_probe(1, "forget", "paraphrase", "It is INCEPTION.", "A film about <script>."),
              fake_probe(2, "forget", "fill-in", "inception", "nothing"),
              fake_probe(3, "neighbor", "same-answer", "Memento", "Memento | Nolan")]
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
