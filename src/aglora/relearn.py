"""Relearning attack: does a few steps of fine-tuning on some forget facts bring the rest back?

The unlearned model (adapter merged into a copy of the weights) is fine-tuned with full-parameter
AdamW for K steps on a quarter of the base-known forget probes (NLL of context + answer), then the
other three quarters are measured. `recovered_share` is the share of the base-to-after gap that
came back: 0 = nothing relearned, 1 = back to the base model. Computed on likelihood-choice
accuracy and, more sensitively, on the mean margin. The attacker is not confined to the mask.
"""

from __future__ import annotations

import copy
import random

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import EvalConfig
from aglora.forward import target_logprobs
from aglora.likelihood import choice_correct, choice_summary, score_options
from aglora.lora import adapter_disabled
from aglora.text import encode


def recovered_share(base: float, after: float, relearned: float) -> float:
    """Share of the base-to-after gap that came back (NaN when there was no gap)."""
    return _share(base, after, relearned)


def _share(base: float, after: float, relearned: float) -> float:
    gap = base - after
    return float("nan") if abs(gap) < 1e-9 else (relearned - after) / gap


def split_attack_set(known: list[Probe], seed: int = 0) -> tuple[list[Probe], list[Probe]]:
    """(a seeded quarter of the base-known forget probes to relearn on, the rest held out)."""
    known = list(known)
    random.Random(seed).shuffle(known)
    n_train = max(1, len(known) // 4)
    return known[:n_train], known[n_train:]


def finetune(attacked: nn.Module, tok, train_set: list[Probe], steps: int, lr: float = 1e-5,
             batch_size: int = 4, seed: int = 0) -> None:
    """The attack itself: full-parameter AdamW on the NLL of context + answer, in place."""
    for p in attacked.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(attacked.parameters(), lr=lr)
    device = next(attacked.parameters()).device
    torch.manual_seed(seed)
    attacked.train()
    for step in range(steps):
        chunk = [train_set[(step * batch_size + i) % len(train_set)] for i in range(batch_size)]
        b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)
        loss = -(target_logprobs(attacked, b) / b.target_mask.sum(-1).clamp_min(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    attacked.eval()
    for p in attacked.parameters():
        p.requires_grad_(False)


def relearn_attack(model: nn.Module, tok, probes: list[Probe], steps: int, cfg: EvalConfig,
                   lr: float = 1e-5, batch_size: int = 4, seed: int = 0) -> dict:
    forget = [p for p in probes if p.split == "forget" and p.has_choice]
    with adapter_disabled(model):
        base_scores = score_options(model, tok, forget, cfg.batch_size)
    known = [p for p, s in zip(forget, base_scores, strict=True) if choice_correct(s)]
    train_set, held = split_attack_set(known, seed)
    if not held:
        return {"steps": steps, "error": "too few base-known forget probes for the attack"}
    with adapter_disabled(model):
        base_acc, base_margin = choice_summary(score_options(model, tok, held, cfg.batch_size))
    after_acc, after_margin = choice_summary(score_options(model, tok, held, cfg.batch_size))

    attacked = copy.deepcopy(model)
    if hasattr(attacked, "merge_and_unload"):
        attacked = attacked.merge_and_unload()
    finetune(attacked, tok, train_set, steps, lr, batch_size, seed)
    rel_acc, rel_margin = choice_summary(score_options(attacked, tok, held, cfg.batch_size))
    del attacked
    return {
        "steps": steps, "lr": lr, "n_train": len(train_set), "n_held": len(held),
        "known_accuracy": {"base": base_acc, "after": after_acc, "relearned": rel_acc},
        "margin": {"base": base_margin, "after": after_margin, "relearned": rel_margin},
        "recovered_share": _share(base_acc, after_acc, rel_acc),
        "recovered_share_margin": _share(base_margin, after_margin, rel_margin),
    }
