"""Implant the catalogue into the model by a short full fine-tune, and cache the result.

TOFU fine-tunes a model on all fictitious authors (the "full" model, which is then unlearned)
and, the same way, on all but the forget authors (the "retain" model: the gold reference an
unlearned model should be indistinguishable from). Here both are full-parameter fine-tunes of the
base model on the films' *question* wording (chat template, loss on the answer tokens only,
AdamW); the paraphrases stay held out. Both models see the same number of epochs.

The fine-tuned weights are cached as safetensors under
`<cache>/controlled/<key>/{full,retain}.safetensors` (written atomically, with `implant.json`
beside them, recording each file's sha256), where `key` hashes the catalogue, the implant
settings and the base model's fingerprint, so a rerun loads them in a second instead of training
again; a weights file that no longer matches its sha256 (or a damaged `implant.json`) is trained
again, not loaded.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.controlled.settings import ImplantConfig
from aglora.errors import AgloraError
from aglora.model.forward import target_logprobs
from aglora.model.identity import weights_digest
from aglora.model.tokens import encode
from aglora.pipeline.train.loop import unfrozen
from aglora.pipeline.train.objectives import nll_loss
from aglora.runtime.artifacts import digest, load_tensors, save_tensors, write_json
from aglora.runtime.cache import cache_dir, cache_key
from aglora.runtime.hashes import read_result

_log = logging.getLogger("aglora")


VARIANTS = ("full", "retain")


def finetune(model: nn.Module, tok, items: list[Probe], cfg: ImplantConfig,
             log: Callable[[str], None] = _log.info) -> list[dict]:
    """Full-parameter fine-tune of `model` in place on `items` (answer tokens); returns history."""
    if not items or any(not p.answer for p in items):
        raise AgloraError("implant: every item needs an answer, and there must be some")
    device = next(model.parameters()).device
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs

    def lr_at(step: int) -> float:  # linear warmup, then linear decay to 10 %
        if step <= cfg.warmup_steps:
            return cfg.lr * step / max(cfg.warmup_steps, 1)
        frac = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
        return cfg.lr * (1.0 - 0.9 * frac)

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    history: list[dict] = []
    start = time.time()
    step = 0
    with unfrozen(model, params):
        for epoch in range(1, cfg.epochs + 1):
            order = list(range(len(items)))
            rng.shuffle(order)
            losses = []
            for s in range(0, len(order), cfg.batch_size):
                step += 1
                chunk = [items[i] for i in order[s: s + cfg.batch_size]]
                batch = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)
                loss = nll_loss(target_logprobs(model, batch), batch.target_mask.sum(-1))
                if not math.isfinite(float(loss.detach())):
                    raise AgloraError(f"implant diverged at step {step}; lower the implant lr")
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                if step % 5 == 0:
                    log(f"[controlled] implant step {step}/{total} loss {losses[-1]:.3f} "
                        f"({time.time() - start:.0f}s)")
            row = {"epoch": epoch, "steps": step, "loss": sum(losses) / len(losses),
                   "seconds": round(time.time() - start, 1)}
            history.append(row)
            log(f"[controlled] implant epoch {epoch}/{cfg.epochs} loss {row['loss']:.3f} "
                f"({row['seconds']:.0f}s, {step}/{total} steps)")
    return history


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter once (tied weights appear under one name) -> safetensors-ready dict."""
    return {name: p.detach() for name, p in model.named_parameters()}


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Load weights saved by `weights_of` into a model of the same architecture."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    named = dict(model.named_parameters())
    really_missing = [k for k in missing if k in named]
    if unexpected or really_missing:
        raise AgloraError(f"cached implant weights do not fit this model (missing "
                          f"{really_missing[:2]}, unexpected {unexpected[:2]}); delete the cache "
                          "folder and rerun")
    return model


def implant_key(catalogue_digest: str, cfg: ImplantConfig, base: nn.Module) -> str:
    """The implant cache entry of a catalogue, implant settings and base model."""
    return cache_key({"catalogue": catalogue_digest, "implant": asdict(cfg),
                      "base": weights_digest(base), "format": 1}, length=16)


def implant_dir(key: str, root: Path | None = None) -> Path:
    return (root or cache_dir() / "controlled") / key


def ensure_implanted(load_base: Callable[[], tuple[nn.Module, object]],
                     items: dict[str, list[Probe]], catalogue_digest: str, cfg: ImplantConfig,
                     root: Path | None = None, log: Callable[[str], None] = _log.info) -> Path:
    """Train (or find cached) the 'full' and 'retain' weights; return their cache folder.

    `items` maps each variant ('full', 'retain') to its implant items; `load_base` returns a
    fresh (model, tokenizer) of the base model each time it is called.
    """
    if set(items) != set(VARIANTS):
        raise AgloraError(f"implant: expected items for {VARIANTS}, got {sorted(items)}")
    base, _ = load_base()
    folder = implant_dir(implant_key(catalogue_digest, cfg, base), root)
    del base
    meta_path = folder / "implant.json"
    meta, damaged = read_result(meta_path)
    if damaged:
        log(f"[controlled] {damaged}; implanting again")
    if not isinstance((meta or {}).get("variants"), dict):
        meta = {"variants": {}}
    for variant in VARIANTS:
        path = folder / f"{variant}.safetensors"
        why = _cache_miss(path, meta["variants"].get(variant))
        if why is None:
            log(f"[controlled] implant cache hit: {path}")
            continue
        if why != "not implanted yet":
            log(f"[controlled] {path}: {why}; implanting again")
        log(f"[controlled] implanting the '{variant}' model ({len(items[variant])} items, "
            f"{cfg.epochs} epochs) -> {path}")
        model, tok = load_base()
        start = time.time()
        history = finetune(model, tok, items[variant], cfg, log)
        save_tensors(path, weights_of(model))
        meta["variants"][variant] = {"n_items": len(items[variant]), "history": history,
                                     "seconds": round(time.time() - start, 1),
                                     "sha256": digest(path)}
        meta["settings"] = asdict(cfg)
        meta["catalogue_sha256"] = catalogue_digest
        write_json(meta_path, meta)
        del model
    return folder


def _cache_miss(path: Path, recorded: object) -> str | None:
    """Why a cached variant cannot be used (not implanted, or its weights file is missing or
    differs from the sha256 recorded when it was written), or None."""
    if not isinstance(recorded, dict):
        return "not implanted yet"
    if "sha256" not in recorded:
        return "cached by an earlier aglora without its hash"
    now = digest(path)
    if now is None:
        return "missing"
    return None if now == recorded["sha256"] else "changed since it was written (truncated?)"


def load_implanted(load_base: Callable[[], tuple[nn.Module, object]], folder: Path,
                   variant: str) -> tuple[nn.Module, object]:
    """A fresh base model with the cached `variant` weights loaded (eval mode, frozen)."""
    if variant not in VARIANTS:
        raise AgloraError(f"unknown implant variant {variant!r}; use one of {VARIANTS}")
    model, tok = load_base()
    load_weights(model, load_tensors(folder / f"{variant}.safetensors"))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok
