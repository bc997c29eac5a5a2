"""Evaluation (aglora.pipeline.eval.evaluate): the base and after sides at once or in turn give
the same numbers beyond float rounding."""

from __future__ import annotations

import pytest

import aglora.pipeline.eval.evaluate as evaluate_mod
from aglora.config import EvalConfig
from tests.tiny import labelled_probes, make_adapted, make_tokenizer


def test_evaluation_is_the_same_with_sides_at_once_or_in_turn(two_threads):
    pm, tok, probes = make_adapted(), make_tokenizer(), labelled_probes()
    results = {}
    for parallel in (True, False):
        cfg = EvalConfig(n_samples=1, max_new_tokens=6, cache_base=False, parallel_sides=parallel)
        metrics, records = evaluate_mod.evaluate(pm, tok, probes, cfg)
        results[parallel] = (metrics, records)
    (m1, r1), (m0, r0) = results[True], results[False]
    for a, b in zip(r1, r0, strict=True):
        assert a["base_scores"] == pytest.approx(b["base_scores"], abs=1e-4)
        assert a["after_scores"] == pytest.approx(b["after_scores"], abs=1e-4)
        assert a["base_generations"] == b["base_generations"]
        assert a["after_generations"] == b["after_generations"]
    assert m1["kl_neighbor"] == pytest.approx(m0["kl_neighbor"], rel=1e-3)  # float rounding
    assert m1["kl_neighbor"] > 0
    assert m1["splits"]["forget"]["known_accuracy"] == m0["splits"]["forget"]["known_accuracy"]
