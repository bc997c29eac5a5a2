"""Relearning attacks by fine-tuning: does a little training bring the forgotten facts back?

Two attacks, each a full-parameter AdamW fine-tune of one standalone copy of the unlearned model
(an adapter merged into the weights) on the NLL of answer tokens after their context; the
attacker is not confined to the mask:

* **relearn** (`relearn_attack`): on a seeded quarter of the base-known forget probes; the other
  three quarters are scored;
* **benign** (`benign_attack`): on the evaluation's neighbour and utility probes that have an
  answer (their prompt and answer, nothing else), never on a forget probe; every base-known
  forget probe is scored. It asks whether ordinary fine-tuning on nearby and general facts undoes
  the unlearning by the way.

Each attack is **one** continued fine-tune scored at every checkpoint of a curve (e.g. after 5,
10, 20, 50 steps): the optimiser and the batch order carry on between checkpoints, so the model
at checkpoint k is the model a separate k-step fine-tune gives (a test checks it), and the
curve costs one fine-tune to its last checkpoint plus one scoring pass per checkpoint.
`recovered_share` is the share of the base-to-after gap that came back: 0 = nothing relearned,
1 = back to the base model, on likelihood-choice accuracy and, more sensitively, on the mean
margin. The base and after scores of the scored facts are the evaluation's own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.model.forward import target_logprobs
from aglora.model.likelihood import choice_correct, choice_summary, score_options
from aglora.model.tokens import encode

BENIGN_SPLITS = ("neighbor", "utility")


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


def known_forget(probes: list[Probe], base_scores: list[list[float]]) -> list[int]:
    """Indices of the forget probes with options that the base model gets right."""
    return [i for i, p in enumerate(probes)
            if p.split == "forget" and p.has_choice and choice_correct(base_scores[i])]


def benign_set(probes: list[Probe], seed: int = 0) -> list[Probe]:
    """The benign attack's training items: every neighbour and utility probe with an answer,
    in a seeded order (so that batches mix the two); never a forget probe."""
    items = [p for p in probes if p.split in BENIGN_SPLITS and p.answer]
    random.Random(seed).shuffle(items)
    return items


class Finetune:
    """A full-parameter AdamW fine-tune of `model` on the answer NLL of `train_set`, in place,
    that can be continued: `advance_to(k)` runs it up to step k. Batch b of step s holds items
    `s * batch_size + i` (mod the set's size), so the steps do not depend on where it pauses."""

    def __init__(self, model: nn.Module, tok, train_set: list[Probe], lr: float = 1e-5,
                 batch_size: int = 4, seed: int = 0) -> None:
        self.model, self.tok, self.train_set, self.batch_size = model, tok, train_set, batch_size
        for p in model.parameters():
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)
        self.device = next(model.parameters()).device
        self.step = 0
        torch.manual_seed(seed)

    def _one_step(self) -> None:
        n = len(self.train_set)
        chunk = [self.train_set[(self.step * self.batch_size + i) % n]
                 for i in range(self.batch_size)]
        b = encode(self.tok, chunk, [p.answer or "" for p in chunk]).to(self.device)
        # mean over the batch of the per-token answer NLL; target_logprobs: [batch]
        loss = -(target_logprobs(self.model, b) / b.target_mask.sum(-1).clamp_min(1)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1

    def advance_to(self, step: int) -> None:
        """Train until `step` steps are done in all (eval mode after)."""
        self.model.train()
        while self.step < step:
            self._one_step()
        self.model.eval()

    def close(self) -> None:
        """Freeze the model (eval mode, no gradients) and drop the optimiser's state."""
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.opt = None


def finetune(attacked: nn.Module, tok, train_set: list[Probe], steps: int, lr: float = 1e-5,
             batch_size: int = 4, seed: int = 0) -> None:
    """The attack itself: full-parameter AdamW on the NLL of the answer tokens, in place."""
    run = Finetune(attacked, tok, train_set, lr, batch_size, seed)
    run.advance_to(steps)
    run.close()


def finetune_curve(attacked: nn.Module, tok, train_set: list[Probe], checkpoints: Sequence[int],
                   score: Callable[[nn.Module], list[list[float]]], lr: float = 1e-5,
                   batch_size: int = 4, seed: int = 0) -> list[list[list[float]]]:
    """One fine-tune of `attacked` (in place) to the last checkpoint, `score(attacked)` at each
    checkpoint (sorted, distinct; 0 = before any step); frozen after."""
    run = Finetune(attacked, tok, train_set, lr, batch_size, seed)
    out = []
    try:
        for k in checkpoints:
            run.advance_to(k)
            out.append(score(attacked))
    finally:
        run.close()
    return out


def as_checkpoints(steps: int | Sequence[int]) -> list[int]:
    """A step count or a list of them as sorted distinct checkpoints."""
    return sorted({int(steps)} if isinstance(steps, int) else {int(s) for s in steps})


def curve_point(steps: int, base: tuple[float, float], after: tuple[float, float],
                scores: list[list[float]]) -> dict:
    """One checkpoint: (accuracy, margin) of the attacked model and the recovered shares.
    `base`, `after`: (accuracy, mean margin) of the same facts before the attack."""
    acc, margin = choice_summary(scores)
    return {"steps": steps, "known_accuracy": acc, "margin": margin,
            "recovered_share": recovered_share(base[0], after[0], acc),
            "recovered_share_margin": recovered_share(base[1], after[1], margin)}


def curve_result(curve: list[dict], base: tuple[float, float],
                 after: tuple[float, float]) -> dict:
    """The last checkpoint in the single-attack form (`known_accuracy` and `margin` base, after,
    relearned; the two shares), with the whole curve under `curve`."""
    last = curve[-1]
    return {
        "steps": last["steps"],
        "known_accuracy": {"base": base[0], "after": after[0],
                           "relearned": last["known_accuracy"]},
        "margin": {"base": base[1], "after": after[1], "relearned": last["margin"]},
        "recovered_share": last["recovered_share"],
        "recovered_share_margin": last["recovered_share_margin"],
        "curve": curve,
    }


def attack_curve(attacked: nn.Module, tok, train_set: list[Probe], scored: list[Probe],
                 base: tuple[float, float], after: tuple[float, float], checkpoints: list[int],
                 lr: float, batch_size: int, seed: int, score_batch_size: int) -> dict:
    """Fine-tune on `train_set`, score `scored` at each checkpoint: `curve_result`."""
    rows = finetune_curve(attacked, tok, train_set, checkpoints,
                          lambda m: score_options(m, tok, scored, score_batch_size),
                          lr, batch_size, seed)
    return curve_result([curve_point(k, base, after, s)
                         for k, s in zip(checkpoints, rows, strict=True)], base, after)


def relearn_attack(attacked: nn.Module, tok, probes: list[Probe],
                   base_scores: list[list[float]], after_scores: list[list[float]],
                   steps: int | Sequence[int], lr: float = 1e-5, batch_size: int = 4,
                   seed: int = 0, score_batch_size: int = 16) -> dict:
    """Fine-tune `attacked` (a standalone copy of the unlearned model, changed in place) on a
    seeded quarter of the base-known forget facts and measure how much of the forgetting comes
    back on the others, after `steps` steps (or at each of a list of checkpoints).

    `base_scores` / `after_scores`: the evaluation's option scores of every probe (index-aligned
    with `probes`), for the base model and the unlearned one.
    """
    checkpoints = as_checkpoints(steps)
    train_idx, held_idx = split_attack_set(known_forget(probes, base_scores), seed)
    if not held_idx:
        return {"steps": checkpoints[-1],
                "error": "too few base-known forget probes for the attack"}
    held = [probes[i] for i in held_idx]
    base = choice_summary([base_scores[i] for i in held_idx])
    after = choice_summary([after_scores[i] for i in held_idx])
    out = attack_curve(attacked, tok, [probes[i] for i in train_idx], held, base, after,
                       checkpoints, lr, batch_size, seed, score_batch_size)
    return {"steps": out.pop("steps"), "lr": lr, "n_train": len(train_idx),
            "n_held": len(held_idx), **out}


def benign_attack(attacked: nn.Module, tok, probes: list[Probe],
                  base_scores: list[list[float]], after_scores: list[list[float]],
                  steps: int | Sequence[int], lr: float = 1e-5, batch_size: int = 4,
                  seed: int = 0, score_batch_size: int = 16) -> dict:
    """Fine-tune `attacked` (in place) on the neighbour and utility probes' answers only
    (`benign_set`) and measure how much of the forgetting comes back on every base-known forget
    fact, at each checkpoint."""
    checkpoints = as_checkpoints(steps)
    known = known_forget(probes, base_scores)
    train_set = benign_set(probes, seed)
    if not known or not train_set:
        return {"steps": checkpoints[-1],
                "error": "no base-known forget probe to score" if not known else
                "no neighbour or utility probe with an answer to fine-tune on"}
    base = choice_summary([base_scores[i] for i in known])
    after = choice_summary([after_scores[i] for i in known])
    out = attack_curve(attacked, tok, train_set, [probes[i] for i in known], base, after,
                       checkpoints, lr, batch_size, seed, score_batch_size)
    return {"steps": out.pop("steps"), "lr": lr, "n_train": len(train_set),
            "train_splits": {s: sum(p.split == s for p in train_set) for s in BENIGN_SPLITS},
            "n_scored": len(known), **out}


def relearn_from_records(model: nn.Module, tok, probes: list[Probe], records: list[dict],
                         steps: int | Sequence[int], score_batch_size: int = 16,
                         seed: int = 0) -> dict:
    """`relearn_attack` on a standalone copy of `model`, with the scores of an evaluation's
    per-probe records (`base_scores`, `after_scores`)."""
    from aglora.model.adapter import standalone_copy
    return relearn_attack(standalone_copy(model), tok, probes,
                          [r["base_scores"] for r in records],
                          [r["after_scores"] for r in records], steps, seed=seed,
                          score_batch_size=score_batch_size)
