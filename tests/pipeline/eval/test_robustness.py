"""The robustness attacks an evaluation runs (aglora.pipeline.eval.robustness): which ones the
settings ask for, their checkpoints, and that the unlearned model is left as it was."""

from __future__ import annotations

import logging

import pytest
import torch

from aglora.config import EvalConfig
from aglora.errors import AgloraError
from aglora.pipeline.eval.robustness import relearn_checkpoints, robustness
from tests.tiny import labelled_probes, make_adapted, make_tokenizer


def test_checkpoints_are_the_curve_and_relearn_steps():
    assert relearn_checkpoints(EvalConfig()) == []
    assert relearn_checkpoints(EvalConfig(relearn_steps=20)) == [20]  # a one-point curve
    assert relearn_checkpoints(EvalConfig(relearn_curve=[50, 5, 10, 20])) == [5, 10, 20, 50]
    assert relearn_checkpoints(EvalConfig(relearn_curve=[5, 10], relearn_steps=10)) == [5, 10]
    assert relearn_checkpoints(EvalConfig(relearn_curve=[5], relearn_steps=7)) == [5, 7]
    with pytest.raises(AgloraError, match=r"eval.relearn_curve=0: must be >= 1"):
        EvalConfig(relearn_curve=[5, 0])


def _records(n_forget: int, n_other: int) -> list[dict]:
    """Every forget probe known to the base and forgotten after; the others known on both."""
    known, forgotten = [-1.0, -3.0, -4.0, -5.0], [-6.0, -3.0, -4.0, -5.0]
    return ([{"base_scores": known, "after_scores": forgotten}] * n_forget
            + [{"base_scores": known, "after_scores": known}] * n_other)


def test_robustness_runs_what_is_asked_and_leaves_the_model_alone():
    tok, model = make_tokenizer(), make_adapted()
    probes = labelled_probes()  # 3 forget, 3 neighbour probes
    records = _records(3, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = EvalConfig(relearn_curve=[1, 2], relearn_benign=True, relearn_in_context=True,
                     batch_size=8)
    out = robustness(model, tok, probes, records, cfg, relearn_checkpoints(cfg))
    assert set(out) == {"relearn", "relearn_benign", "relearn_in_context"}
    assert [p["steps"] for p in out["relearn"]["curve"]] == [1, 2]
    assert [p["steps"] for p in out["relearn_benign"]["curve"]] == [1, 2]
    assert (out["relearn"]["n_train"], out["relearn"]["n_held"]) == (1, 2)
    assert (out["relearn_benign"]["n_train"], out["relearn_benign"]["n_scored"]) == (3, 3)
    assert (out["relearn_in_context"]["n_context"], out["relearn_in_context"]["n_held"]) == (1, 2)
    assert all(out[k]["seconds"] >= 0 for k in out)
    for k, v in model.state_dict().items():  # every attack worked on its own copy
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora" not in n)


def test_nothing_asked_runs_nothing_and_benign_needs_checkpoints(caplog):
    tok, model = make_tokenizer(), make_adapted()
    probes, records = labelled_probes(), _records(3, 3)
    assert robustness(model, tok, probes, records, EvalConfig(), []) == {}
    with caplog.at_level(logging.WARNING, logger="aglora"):
        out = robustness(model, tok, probes, records, EvalConfig(relearn_benign=True), [])
    assert out == {} and "eval.relearn_benign needs checkpoints" in caplog.text
    only = robustness(model, tok, probes, records, EvalConfig(relearn_in_context=True), [])
    assert set(only) == {"relearn_in_context"}
