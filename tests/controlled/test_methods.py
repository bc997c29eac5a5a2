"""The controlled track's methods (aglora.controlled.methods): the shared registry, run configs, and
each method on a tiny implanted model."""

from __future__ import annotations

import pytest
import torch

from aglora.controlled.catalogue import generate_catalogue
from aglora.controlled.methods import run_method
from aglora.controlled.settings import MethodSettings
from tests.controlled.helpers import logp, tiny_loader


def test_track_methods_are_the_shared_registry():
    from aglora.controlled.settings import KNOWN_METHODS
    from aglora.methods import METHODS as SHARED
    assert set(KNOWN_METHODS) == set(SHARED)


def test_track_settings_become_each_methods_run_config():
    from aglora.controlled.methods import run_config
    s = MethodSettings(steps=7, lora_lr=3e-3, full_lr=2e-5, lora_retain_weight=9.0,
                       full_retain_weight=0.5, k=32, rank=4, seed=3)
    lora, full = run_config("ag_lora", s), run_config("full_npo", s)
    # A fixed budget: no early stop before the last step, one check at the end.
    assert lora.train.max_steps == lora.train.min_steps == lora.train.check_every == 7
    assert (lora.train.retain_objective, lora.train.lr, lora.train.retain_weight) == \
        ("kl", 3e-3, 9.0)
    assert (full.train.retain_objective, full.train.lr, full.train.retain_weight) == \
        ("nll", 2e-5, 0.5)
    assert (lora.mask.k, lora.lora.rank, lora.train.seed) == (32, 4, 3)


@pytest.mark.parametrize("name", ["ag_lora", "plain_lora", "random_lora", "full_gd",
                                  "full_npo"])
def test_each_trained_method_lowers_the_forget_answers(name):
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    forget = [q.question for q in cat.questions if q.question.split == "forget"][:4]
    retain = [q.question for q in cat.questions if q.question.split != "forget"][:4]
    model, tok = tiny_loader()
    base = [p.detach().clone() for p in model.parameters()]
    before = logp(model, tok, forget)
    settings = MethodSettings(steps=4, batch_size=4, lora_lr=5e-2, full_lr=5e-3, k=16,
                              record_retain=4)
    out = run_method(name, model, tok, forget, retain, settings, lambda s: None)
    after = logp(out.model, tok, forget)
    assert out.steps == 4 and out.trainable_params > 0
    assert float(after.mean()) < float(before.mean())
    # Every method works on its own copy: the implanted model it was given is untouched.
    assert all(torch.equal(a, b) for a, b in zip(base, model.parameters(), strict=True))
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("name", ["rmu", "act_edit"])
def test_rmu_and_act_edit_change_the_model_not_the_input(name):
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    forget = [q.question for q in cat.questions if q.question.split == "forget"][:4]
    retain = [q.question for q in cat.questions if q.question.split != "forget"][:4]
    model, tok = tiny_loader()
    before = logp(model, tok, forget)
    out = run_method(name, model, tok, forget, retain,
                        MethodSettings(steps=3, batch_size=4, k=16, record_retain=4,
                                       full_lr=5e-3), lambda s: None)
    assert (logp(out.model, tok, forget) - before).abs().max() > 1e-3
    assert torch.equal(logp(model, tok, forget), before)
