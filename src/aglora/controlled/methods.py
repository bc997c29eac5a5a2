"""The unlearning methods of the controlled track, one small function per method.

Each method takes the implanted "full" model (a plain causal LM, frozen), the forget items (the
forget films' implanted questions) and retain items (the other films' implanted questions), and
returns the unlearned model after exactly `settings.steps` optimisation steps (no early stopping:
every method gets the same step budget, as in TOFU). The registry `METHODS` maps a name to its
function; at merge it can be replaced by the shared method registry of `aglora bench`
(issue 4, part 1), whose names these follow.

- ag_lora:    record/score/mask on forget vs retain items (ratio scorer, top-k neurons), masked
              LoRA on `down_proj`, NPO + KL(full || model) on retain items (aglora's defaults).
- plain_lora: the same LoRA rank, objective and lr on every layer's `down_proj`, no mask.
- full_gd:    every parameter, gradient difference: ascent on forget NLL + descent on retain NLL.
- full_npo:   every parameter, NPO on forget answers (reference = the full model, log-probs
              computed once before training) + retain NLL (open-unlearning's NPO).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import LoraConfig, MaskConfig, TrainConfig
from aglora.controlled.settings import MethodSettings
from aglora.errors import AgloraError
from aglora.forward import target_logprobs
from aglora.objectives import grad_ascent_loss, nll_loss, npo_loss
from aglora.text import encode


@dataclass
class MethodOutcome:
    model: nn.Module
    steps: int
    trainable_params: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


MethodFn = Callable[[nn.Module, object, list[Probe], list[Probe], MethodSettings,
                     Callable[[str], None]], MethodOutcome]
METHODS: dict[str, MethodFn] = {}


def register(name: str) -> Callable[[MethodFn], MethodFn]:
    def deco(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        return fn
    return deco


def check_methods(names: list[str]) -> None:
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise AgloraError(f"unknown method(s) {unknown or names}; choose from "
                          f"{', '.join(METHODS)}")


# ---- LoRA methods: aglora's own training loop ------------------------------------------------
def _lora_train_config(s: MethodSettings) -> TrainConfig:
    # min_steps = max_steps and one check at the end: a fixed budget, no early stopping.
    return TrainConfig(forget_objective="npo", retain_objective="kl",
                       retain_weight=s.lora_retain_weight, npo_beta=s.npo_beta, lr=s.lora_lr,
                       batch_size=s.batch_size, max_steps=s.steps, min_steps=s.steps,
                       check_every=s.steps, seed=s.seed)


def _train_lora(peft_model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
                s: MethodSettings, log: Callable[[str], None], extra: dict) -> MethodOutcome:
    from aglora.lora import count_parameters
    from aglora.train import train

    result = train(peft_model, tok, forget, retain, _lora_train_config(s), log=log)
    trainable, effective, _ = count_parameters(peft_model)
    return MethodOutcome(peft_model, result.steps, trainable, result.seconds, result.history,
                         {**extra, "effective_params": effective})


@register("ag_lora")
def ag_lora(model: nn.Module, tok, forget: list[Probe], retain: list[Probe], s: MethodSettings,
            log: Callable[[str], None] = print) -> MethodOutcome:
    """Activation-guided masked LoRA: record -> score (ratio) -> top-k mask -> masked LoRA."""
    from aglora.lora import attach_lora
    from aglora.masks import NeuronMask, select
    from aglora.models import mlp_layers
    from aglora.record import record
    from aglora.scoring import compute_scores

    start = time.time()
    rec_retain = random.Random(s.seed).sample(retain, min(s.record_retain, len(retain)))
    stats = record(model, tok, forget, rec_retain, batch_size=s.batch_size)
    score = compute_scores(stats, "ratio")["score"]  # [n_layers, d_ff]
    layers = [layer.index for layer in mlp_layers(model)]
    mask = NeuronMask(select(score, MaskConfig(k=s.k)), layers)
    record_seconds = time.time() - start
    log(f"[controlled] ag_lora: {mask.n_selected} neurons in layers "
        f"{mask.layers_with_neurons()} (record+score {record_seconds:.0f}s)")
    torch.manual_seed(s.seed)
    peft_model = attach_lora(model, mask, LoraConfig(rank=s.rank))
    out = _train_lora(peft_model, tok, forget, retain, s, log,
                      {"record_seconds": round(record_seconds, 1),
                       "mask_layers": mask.layers_with_neurons(), "k": s.k})
    out.seconds += record_seconds
    return out


@register("plain_lora")
def plain_lora(model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
               s: MethodSettings, log: Callable[[str], None] = print) -> MethodOutcome:
    """Unmasked LoRA of the same rank on every layer's down_proj, same objective and lr."""
    from aglora.lora import attach_lora

    torch.manual_seed(s.seed)
    peft_model = attach_lora(model, None, LoraConfig(rank=s.rank, masked=False, all_layers=True))
    return _train_lora(peft_model, tok, forget, retain, s, log, {})


# ---- full-parameter baselines ----------------------------------------------------------------
def _full_unlearn(model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
                  s: MethodSettings, objective: str, log: Callable[[str], None]
                  ) -> MethodOutcome:
    """Every parameter trained: forget term (grad_ascent | npo) + retain_weight * retain NLL."""
    label = "full_npo" if objective == "npo" else "full_gd"
    device = next(model.parameters()).device
    rng = random.Random(s.seed)
    torch.manual_seed(s.seed)
    ref = torch.zeros(len(forget))
    if objective == "npo":
        with torch.no_grad():
            for i in range(0, len(forget), s.batch_size):
                chunk = forget[i: i + s.batch_size]
                b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)
                ref[i: i + len(chunk)] = target_logprobs(model, b).cpu()
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s.full_lr, weight_decay=0.0)
    history: list[dict] = []
    start = time.time()
    model.train()
    try:
        for step in range(1, s.steps + 1):
            f_idx = rng.sample(range(len(forget)), min(s.batch_size, len(forget)))
            f_items = [forget[i] for i in f_idx]
            fb = encode(tok, f_items, [p.answer or "" for p in f_items]).to(device)
            logp = target_logprobs(model, fb)  # [batch]
            if objective == "npo":
                forget_loss = npo_loss(logp, ref[f_idx].to(device), s.npo_beta)
            else:
                forget_loss = grad_ascent_loss(logp, fb.target_mask.sum(-1))
            r_items = rng.sample(retain, min(s.batch_size, len(retain)))
            rb = encode(tok, r_items, [p.answer or "" for p in r_items]).to(device)
            retain_loss = nll_loss(target_logprobs(model, rb), rb.target_mask.sum(-1))
            loss = forget_loss + s.full_retain_weight * retain_loss
            if not math.isfinite(float(loss.detach())):
                raise AgloraError(f"{label} diverged at step {step}; lower full_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            row = {"step": step, "loss": float(loss.detach()),
                   "forget_loss": float(forget_loss.detach()),
                   "retain_loss": float(retain_loss.detach()),
                   "seconds": round(time.time() - start, 2)}
            history.append(row)
            log(f"[controlled] {label} step {step:3d} loss {row['loss']:.3f} forget "
                f"{row['forget_loss']:.3f} retain {row['retain_loss']:.3f}")
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    trainable = sum(p.numel() for p in params)
    return MethodOutcome(model, s.steps, trainable, time.time() - start, history)


@register("full_gd")
def full_gd(model: nn.Module, tok, forget: list[Probe], retain: list[Probe], s: MethodSettings,
            log: Callable[[str], None] = print) -> MethodOutcome:
    """Full-parameter gradient difference (TOFU's grad_diff)."""
    return _full_unlearn(model, tok, forget, retain, s, "grad_ascent", log)


@register("full_npo")
def full_npo(model: nn.Module, tok, forget: list[Probe], retain: list[Probe], s: MethodSettings,
             log: Callable[[str], None] = print) -> MethodOutcome:
    """Full-parameter NPO + retain NLL."""
    return _full_unlearn(model, tok, forget, retain, s, "npo", log)
