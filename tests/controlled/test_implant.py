"""Implanting the catalogue (aglora.controlled.implant) and its cache."""

from __future__ import annotations

import pytest
import torch

from aglora.controlled import implant as implant_mod
from aglora.controlled.catalogue import generate_catalogue
from aglora.controlled.implant import ensure_implanted, finetune, load_implanted
from aglora.controlled.settings import ImplantConfig
from aglora.errors import AgloraError
from tests.controlled.helpers import logp, tiny_loader
from tests.tiny import make_model


def test_finetune_learns_the_items_and_freezes_after():
    model, tok = tiny_loader()
    items = [q.question for q in generate_catalogue(0, n_films=4, n_forget=1).questions][:4]
    before = logp(model, tok, items)
    finetune(model, tok, items, ImplantConfig(epochs=4, lr=3e-3, batch_size=4), log=lambda s: 0)
    after = logp(model, tok, items)
    assert float(after.mean()) > float(before.mean()) + 1.0
    assert not any(p.requires_grad for p in model.parameters())


def test_implant_cache_hit_skips_training(tmp_path, monkeypatch):
    cat = generate_catalogue(0, n_films=4, n_forget=1)
    items = {"full": [q.question for q in cat.questions][:6],
             "retain": [q.question for q in cat.questions if q.question.split != "forget"][:4]}
    cfg = ImplantConfig(epochs=1, lr=1e-3, batch_size=4)
    calls = []
    real = implant_mod.finetune

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(implant_mod, "finetune", counting)
    folder = ensure_implanted(tiny_loader, items, cat.digest(), cfg, tmp_path, log=lambda s: 0)
    assert len(calls) == 2
    assert (folder / "full.safetensors").is_file() and (folder / "retain.safetensors").is_file()
    again = ensure_implanted(tiny_loader, items, cat.digest(), cfg, tmp_path, log=lambda s: 0)
    assert again == folder and len(calls) == 2  # cache hit: no training
    other = ensure_implanted(tiny_loader, items, cat.digest(), ImplantConfig(epochs=2, lr=1e-3),
                             tmp_path, log=lambda s: 0)
    assert other != folder and len(calls) == 4  # other settings: another cache entry
    full, tok = load_implanted(tiny_loader, folder, "full")
    retain, _ = load_implanted(tiny_loader, folder, "retain")
    base, _ = tiny_loader()
    probe = items["full"][:2]
    assert not torch.allclose(logp(full, tok, probe), logp(base, tok, probe))
    assert not torch.allclose(logp(full, tok, probe), logp(retain, tok, probe))
    with pytest.raises(AgloraError):
        load_implanted(tiny_loader, folder, "neither")


def test_cached_weights_for_another_model_are_refused(tmp_path):
    model, _ = tiny_loader()
    tensors = implant_mod.weights_of(model)
    other = make_model(layers=2)
    with pytest.raises(AgloraError, match="do not fit"):
        implant_mod.load_weights(other, tensors)
