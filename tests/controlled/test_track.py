"""The whole controlled track (aglora.controlled.track): model utility, set summaries, and a tiny
run that writes its outputs and resumes per method."""

from __future__ import annotations

import math

import pytest

from aglora.controlled import track as track_mod
from aglora.controlled.catalogue import generate_catalogue
from aglora.controlled.settings import ControlledConfig, ImplantConfig, MethodSettings
from tests.controlled.helpers import tiny_loader


def test_model_utility_is_the_harmonic_mean_of_nine_numbers():
    ev = {"forget_films": {}}
    values = []
    for i, name in enumerate(("retain_films", "real_authors", "world_facts")):
        row = {"probability": 0.2 + 0.1 * i, "accuracy": 0.9 - 0.1 * i,
               "truth_ratio_score": 0.4 + 0.05 * i}
        ev[name] = row
        values += list(row.values())
    util, parts = track_mod.model_utility(ev)
    assert len(parts) == 9
    assert util == pytest.approx(9 / sum(1 / v for v in values))


def test_summarise_set_planted_scores():
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    probes = cat.probes(forget=True)[:2]
    scores = [[-1.0, -3.0, -3.0, -3.0], [-5.0, -1.0, -2.0, -9.0]]
    lengths = [[1, 1, 1, 1], [1, 1, 1, 1]]
    out = track_mod.summarise_set("forget_films", probes, scores, lengths)
    assert out["accuracy"] == 0.5
    assert out["truth_ratios"][0] == pytest.approx(math.exp(-2))
    assert out["probability"] == pytest.approx((math.exp(-1) + math.exp(-5)) / 2)
    assert out["accuracy_by_family"] == {"question": 1.0, "paraphrase": 0.0}


def _tiny_cfg(steps: int = 2) -> ControlledConfig:
    return ControlledConfig(n_films=4, n_forget=1, utility_films=2, real_world_limit=2,
                            methods=["plain_lora"],
                            implant=ImplantConfig(epochs=1, batch_size=8),
                            method=MethodSettings(steps=steps, k=8, batch_size=4))


def test_track_writes_outputs_and_resumes_per_method(tmp_path, monkeypatch):
    out, cache = tmp_path / "out", tmp_path / "cache"
    quiet = lambda s: None  # noqa: E731
    summary = track_mod.run_controlled(_tiny_cfg(), out, tiny_loader, cache, quiet)
    for f in ("controlled.json", "controlled.md", "controlled.png", "catalogue.json",
              "methods/plain_lora.json", "reference/retain.json"):
        assert (out / f).is_file(), f
    ref = summary["references"]["retain"]
    assert ref["forget_quality"] == 1.0 and ref["ks_statistic"] == 0.0
    row = summary["methods"]["plain_lora"]
    assert 0.0 <= row["forget_quality"] <= 1.0 and row["steps"] == 2
    assert len(row["eval"]["forget_films"]["truth_ratios"]) == 16
    assert "| **plain_lora** |" in (out / "controlled.md").read_text()

    def boom(*args, **kwargs):
        raise AssertionError("should have been skipped")

    monkeypatch.setattr(track_mod.methods, "run_method", boom)
    monkeypatch.setattr(track_mod, "evaluate_model", boom)
    again = track_mod.run_controlled(_tiny_cfg(), out, tiny_loader, cache, quiet)
    assert again["methods"]["plain_lora"]["eval"] == row["eval"]
    # Other method settings: the method reruns, the references do not.
    with pytest.raises(AssertionError, match="skipped"):
        track_mod.run_controlled(_tiny_cfg(steps=3), out, tiny_loader, cache, quiet)
