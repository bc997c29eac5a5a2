"""Relearning attack: does a few steps of fine-tuning on some forget facts bring the rest back?

The unlearned model, as one standalone copy (an adapter merged into the weights), is fine-tuned with
full-parameter AdamW for K steps on a seeded quarter of the base-known forget probes (NLL of the
answer tokens after the context); then the other three quarters are scored. `recovered_share` is the
share of the base-to-after gap that came back: 0 = nothing relearned, 1 = back to the base model, on
likelihood-choice accuracy and, more sensitively, on the mean margin. The attacker is not confined
to the mask. The base and after scores of the held-out facts are the evaluation's own, so the attack
costs only the fine-tune and one scoring pass.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.model.forward import target_logprobs
from aglora.model.likelihood import choice_correct, choice_summary, score_options
from aglora.model.tokens import encode


def recovered_share(base: float, after: float, relearned: float) -> float:
    """Share of the base-to-after gap that came back (NaN when there was no gap)."""
    gap = base - after
    return float("nan") if abs(gap) < 1e-9 else (relearned - after) / gap


def split_attack_set(known: list, seed: int = 0) -> tuple[list, list]:
    """(a seeded quarter of the base-known forget facts to relearn on, the rest held out)."""
    known = list(known)
    random.Random(seed).shuffle(known)
    n_train = max(1, len(known) // 4)
    return known[:n_train], known[n_train:]


def finetune(attacked: nn.Module, tok, train_set: list[Probe], steps: int, lr: float = 1e-5,
             batch_size: int = 4, seed: int = 0) -> None:
    """The attack itself: full-parameter AdamW on the NLL of the answer tokens, in place."""
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


def relearn_attack(attacked: nn.Module, tok, probes: list[Probe],
                   base_scores: list[list[float]], after_scores: list[list[float]], steps: int,
                   lr: float = 1e-5, batch_size: int = 4, seed: int = 0,
                   score_batch_size: int = 16) -> dict:
    """Fine-tune `attacked` (a standalone copy of the unlearned model, changed in place) and
    measure how much of the forgetting comes back on the held-out facts.

    `base_scores` / `after_scores`: the evaluation's option scores of every probe (index-aligned
    with `probes`), for the base model and the unlearned one.
    """
    known = [i for i, p in enumerate(probes)
             if p.split == "forget" and p.has_choice and choice_correct(base_scores[i])]
    train_idx, held_idx = split_attack_set(known, seed)
    if not held_idx:
        return {"steps": steps, "error": "too few base-known forget probes for the attack"}
    base_acc, base_margin = choice_summary([base_scores[i] for i in held_idx])
    after_acc, after_margin = choice_summary([after_scores[i] for i in held_idx])
    finetune(attacked, tok, [probes[i] for i in train_idx], steps, lr, batch_size, seed)
    rel_acc, rel_margin = choice_summary(score_options(
        attacked, tok, [probes[i] for i in held_idx], score_batch_size))
    return {
        "steps": steps, "lr": lr, "n_train": len(train_idx), "n_held": len(held_idx),
        "known_accuracy": {"base": base_acc, "after": after_acc, "relearned": rel_acc},
        "margin": {"base": base_margin, "after": after_margin, "relearned": rel_margin},
        "recovered_share": recovered_share(base_acc, after_acc, rel_acc),
        "recovered_share_margin": recovered_share(base_margin, after_margin, rel_margin),
    }


def relearn_from_records(model: nn.Module, tok, probes: list[Probe], records: list[dict],
                         steps: int, score_batch_size: int = 16, seed: int = 0) -> dict:
    """`relearn_attack` on a standalone copy of `model`, with the scores of an evaluation's
    per-probe records (`base_scores`, `after_scores`)."""
    from aglora.model.adapter import standalone_copy
    return relearn_attack(standalone_copy(model), tok, probes,
                          [r["base_scores"] for r in records],
                          [r["after_scores"] for r in records], steps, seed=seed,
                          score_batch_size=score_batch_size)
