"""The training loop (thin): forget term + alpha * retain term on the LoRA parameters only.

Each step samples a forget batch and a retain batch (seeded). The base model's outputs, needed by
NPO (reference log-probs) and by the KL retain term (base logits at the retain items' content
positions), are computed once before the first step and kept; they come from the same peft model
with its adapter disabled, so no second copy of the weights is held (full-parameter baselines pass
the untouched base model as `reference` instead). The base logits are kept only while they fit in
`BASE_LOGITS_CACHE_BYTES`; beyond that (large vocabularies, many retain items) they are recomputed
per step, which gives the same loss.
Training stops early once the forget items are at chance on likelihood choice (and their mean
margin is below `stop_margin`), after `min_steps`; `max_steps` is a hard cap.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.errors import AgloraError
from aglora.forward import (
    logits_at,
    logits_at_each,
    next_token_ids,
    target_logprobs_from_logits,
)
from aglora.likelihood import choice_correct, choice_summary, score_options
from aglora.lora import adapter_disabled, trainable_parameters
from aglora.objectives import (
    blocked_distribution,
    check_objectives,
    grad_ascent_loss,
    kl_base_model,
    nll_loss,
    npo_loss,
    others_kl_loss,
)
from aglora.text import Batch, chat_prefix_text, context_text, encode, join_target

BASE_LOGITS_CACHE_BYTES = 1 << 30  # keep the retain items' base logits when they fit in 1 GiB
ANSWER_OBJECTIVES = ("npo", "grad_ascent")  # forget terms on the concept answer


@dataclass
class TrainResult:
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


class _Cycler:
    """Endless seeded shuffled batches of indices (0..n-1, or the subset set by `restrict`)."""

    def __init__(self, n: int, batch: int, rng: random.Random) -> None:
        self.ids, self.batch, self.rng, self.pool = list(range(n)), batch, rng, []

    def restrict(self, ids: list[int]) -> None:
        """Draw only from `ids` from now on (the current round keeps its order)."""
        self.ids = list(ids)
        keep = set(ids)
        self.pool = [i for i in self.pool if i in keep]

    def next(self) -> list[int]:
        out: list[int] = []
        while len(out) < min(self.batch, len(self.ids)):
            if not self.pool:
                self.pool = list(self.ids)
                self.rng.shuffle(self.pool)
            out.append(self.pool.pop())
        return out


def split_leading_words(answer: str, words: list[str]) -> tuple[str, str]:
    """(leading words of `answer` found in `words`, the rest); at least one word stays.

    split_leading_words("The Matrix", ["The", "A"]) == ("The", "Matrix").
    """
    head, rest = [], answer.split(" ")
    while len(rest) > 1 and rest[0] in words:
        head.append(rest.pop(0))
    return " ".join(head), " ".join(rest)


def answer_batch(tok, items: list[Probe], skip_leading: list[str]) -> Batch:
    """Forget items with their answers as targets; leading words listed in `skip_leading` are
    moved into the context, so they are seen but not part of the scored (pushed-down) target."""
    if not skip_leading:
        return encode(tok, items, [p.answer or "" for p in items])
    contexts, targets = [], []
    for p in items:
        head, rest = split_leading_words(p.answer or "", skip_leading)
        ctx = context_text(tok, p)
        contexts.append(ctx + join_target(ctx, head) if head else ctx)
        targets.append(rest)
    return encode(tok, items, targets, contexts=contexts)


def _forget_batch(tok, items: list[Probe], cfg: TrainConfig, refusals: list[str],
                  alternatives: list[str], rng: random.Random):
    """Encode forget items for the objective: the concept answer, or a replacement target."""
    if cfg.forget_objective in ANSWER_OBJECTIVES:
        return answer_batch(tok, items, cfg.forget_skip_leading)
    if cfg.forget_objective == "refusal":
        contexts = [chat_prefix_text(tok, p.prompt) if p.format == "chat" else p.prompt
                    for p in items]
        return encode(tok, items, [rng.choice(refusals) for _ in items], contexts=contexts)
    if not alternatives:
        raise AgloraError("forget_objective=alternative needs 'alternatives:' in the concept spec")
    return encode(tok, items, [rng.choice(alternatives) for _ in items])


@contextmanager
def base_view(model: nn.Module, reference: nn.Module | None) -> Iterator[nn.Module]:
    """The model that plays the base: `reference` if given, else `model` with its adapter off."""
    if reference is not None:
        yield reference
    else:
        with adapter_disabled(model):
            yield model


@contextmanager
def unfrozen(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Train `params` of `model`: unfrozen inside; on exit, even on an error, the model is back
    in eval mode with `params` frozen and their gradients dropped (full-parameter training)."""
    for p in params:
        p.requires_grad_(True)
    model.train()
    try:
        yield
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None


class GoalCheck(NamedTuple):
    """Likelihood choice on the forget items at an early-stopping check."""
    met: bool                    # the stopping goal is met
    accuracy: float
    margin: float                # mean answer - best distractor (nats)
    answers_at_goal: set[str]    # answers whose own items are at the goal
    items_at_goal: set[int]      # indices into the checked items whose answer no longer beats
                                 # every distractor


def forget_goal_met(model: nn.Module, tok, items: list[Probe], cfg: TrainConfig,
                    chance: float) -> GoalCheck:
    """Likelihood choice on the forget items: goal met, accuracy, mean margin, the answers and
    the items at the goal. An answer is at the goal when its own items are (accuracy <= chance
    or `stop_accuracy`, mean margin <= `stop_margin`); with `cfg.stop_each_answer` every answer
    must be, besides all items on average (a ban of several titles stops only when every title
    is at chance, not when they are on average)."""
    scores = score_options(model, tok, items, batch_size=64)
    acc, marg = choice_summary(scores)
    goal = cfg.stop_accuracy if cfg.stop_accuracy is not None else chance
    met = acc <= goal and marg <= cfg.stop_margin
    groups: dict[str, list[list[float]]] = {}
    for item, row in zip(items, scores, strict=True):
        groups.setdefault(item.answer or "", []).append(row)
    done = set()
    for answer, rows in groups.items():
        g_acc, g_marg = choice_summary(rows)
        if g_acc <= goal and g_marg <= cfg.stop_margin:
            done.add(answer)
    if cfg.stop_each_answer:
        met = met and done == set(groups)
    below = {i for i, row in enumerate(scores) if row and not choice_correct(row)}
    return GoalCheck(met, acc, marg, done, below)


@torch.no_grad()
def cached_base_logits(model: nn.Module, tok, items: list[Probe], batch_size: int,
                       reference: nn.Module | None,
                       limit_bytes: int = BASE_LOGITS_CACHE_BYTES) -> list[torch.Tensor] | None:
    """Per retain item, the base model's logits at its content positions [n_content_i, vocab];
    None when they would take more than `limit_bytes`.

    A row's content positions do not depend on the rest of its batch (right padding), so the
    logits of any retain batch are the items' tensors concatenated in batch order.
    """
    if not items:
        return None
    device = next(model.parameters()).device
    vocab = _causal_lm_vocab(model)
    n_content = [int(encode(tok, [p], [p.answer or ""]).content_mask.sum()) for p in items]
    if sum(n_content) * vocab * 4 > limit_bytes:
        return None
    out: list[torch.Tensor] = []
    with base_view(model, reference) as ref_model:
        for s in range(0, len(items), batch_size):
            chunk = items[s: s + batch_size]
            b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)
            logits = logits_at(ref_model, b, b.content_mask).float()  # [n, vocab]
            out += list(logits.split([int(c) for c in b.content_mask.sum(-1)]))
    return out


@torch.no_grad()
def base_answer_side(model: nn.Module, tok, items: list[Probe], cfg: TrainConfig,
                     reference: nn.Module | None, want_logp: bool, want_blocked: bool
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The base model on the forget answers, in one pass over them: the summed answer
    log-probability per item (NPO's reference, [n_items]; zeros unless `want_logp`) and, if
    `want_blocked`, per item the next-token distribution at its answer tokens with the answer
    token removed ([n_answer_i, vocab], the `forget_others_kl` term's target; kept on the CPU)."""
    ref_logp = torch.zeros(len(items))
    blocked: list[torch.Tensor] = []
    if not (want_logp or want_blocked):
        return ref_logp, blocked
    device = next(model.parameters()).device
    with base_view(model, reference) as ref_model:
        for s in range(0, len(items), cfg.batch_size):
            chunk = items[s: s + cfg.batch_size]
            b = answer_batch(tok, chunk, cfg.forget_skip_leading).to(device)
            logits = logits_at(ref_model, b, b.target_mask)  # [n_answer_tokens, vocab]
            ref_logp[s: s + len(chunk)] = target_logprobs_from_logits(logits, b).cpu()
            if want_blocked:
                target = blocked_distribution(logits, next_token_ids(b, b.target_mask)).cpu()
                blocked += list(target.split([int(c) for c in b.target_mask.sum(-1)]))
    return ref_logp, blocked


def _causal_lm_vocab(model: nn.Module) -> int:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm.get_output_embeddings().weight.shape[0]


def _retain_term(model: nn.Module, rb: Batch, objective: str, reference: nn.Module | None,
                 base_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """(retain loss, its KL part) on a retain batch for objective kl | nll | kl+nll.

    `base_logits` [n_content, vocab]: the base model's logits at the batch's content positions
    if already known (else computed here).
    """
    # One decoder pass serves both terms; logits only at the positions a term needs.
    wants_kl, wants_nll = "kl" in objective, "nll" in objective
    content_logits, target_logits = logits_at_each(
        model, rb, [rb.content_mask if wants_kl else torch.zeros_like(rb.content_mask),
                    rb.target_mask if wants_nll else torch.zeros_like(rb.target_mask)])
    loss = torch.zeros((), device=rb.input_ids.device)
    kl_value = 0.0
    if wants_kl:
        if base_logits is None:
            with torch.no_grad(), base_view(model, reference) as ref_model:
                base_logits = logits_at(ref_model, rb, rb.content_mask)  # [n, vocab]
        kl = kl_base_model(content_logits, base_logits)
        kl_value = float(kl.detach())
        loss = loss + kl
    if wants_nll:
        loss = loss + nll_loss(target_logprobs_from_logits(target_logits, rb),
                               rb.target_mask.sum(-1))
    return loss, kl_value


def _progress_line(row: dict) -> str:
    line = (f"[aglora] step {row['step']:3d} loss {row['loss']:.3f} forget "
            f"{row['forget_loss']:.3f} retain {row['retain_loss']:.4f}")
    if "train_forget_accuracy" in row:
        line += (f" acc {row['train_forget_accuracy']:.2f} margin "
                 f"{row['train_forget_margin']:.2f}")
    return line


def train(model: nn.Module, tok, forget: list[Probe], retain: list[Probe], cfg: TrainConfig,
          refusals: list[str] | None = None, alternatives: list[str] | None = None,
          log=print, params: list[nn.Parameter] | None = None,
          reference: nn.Module | None = None) -> TrainResult:
    """Optimise the LoRA parameters of a peft `model` in place; returns the history.

    `params` (default: the LoRA parameters) and `reference` (default: `model` with its adapter
    disabled) let full-parameter baselines use the same loop: they train a copy of the base
    model and pass the untouched base as the reference for NPO and the KL retain term.
    """
    check_objectives(cfg.forget_objective, cfg.retain_objective)
    if not forget:
        raise AgloraError("the forget set is empty; nothing to unlearn")
    if cfg.forget_objective in ANSWER_OBJECTIVES and any(not p.answer for p in forget):
        raise AgloraError(f"forget_objective={cfg.forget_objective} needs an 'answer' on every "
                          "forget item")
    params = trainable_parameters(model) if params is None else params
    if not params:
        raise AgloraError("no trainable LoRA parameters: attach an adapter first")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    choice_index = [i for i, p in enumerate(forget) if p.has_choice]  # choice item -> forget
    choice_items = [forget[i] for i in choice_index]
    item_weight = torch.ones(len(forget))  # [n_forget] forget-term weight per item
    chance = (sum(1 / (1 + len(p.distractors)) for p in choice_items) / len(choice_items)
              if choice_items else 0.0)

    others = cfg.forget_others_kl > 0 and cfg.forget_objective in ANSWER_OBJECTIVES
    ref_logp, blocked = base_answer_side(model, tok, forget, cfg, reference,
                                         cfg.forget_objective == "npo", others)
    base_logits = (cached_base_logits(model, tok, retain, cfg.batch_size, reference)
                   if "kl" in cfg.retain_objective else None)
    f_cycle = _Cycler(len(forget), cfg.batch_size, rng)
    r_cycle = _Cycler(len(retain), cfg.batch_size, rng) if retain else None
    result = TrainResult()
    start = time.time()
    model.train()
    try:
        for step in range(1, cfg.max_steps + 1):
            f_idx = f_cycle.next()
            f_items = [forget[i] for i in f_idx]
            fb = _forget_batch(tok, f_items, cfg, refusals or [], alternatives or [], rng)
            fb = fb.to(device)
            answer_logits = logits_at(model, fb, fb.target_mask)  # [n_target_tokens, vocab]
            logp = target_logprobs_from_logits(answer_logits, fb)  # [batch]
            n_tok = fb.target_mask.sum(-1)
            weight = item_weight[f_idx].to(device)  # [batch]
            if cfg.forget_objective == "npo":
                forget_loss = npo_loss(logp, ref_logp[f_idx].to(device), cfg.npo_beta, weight)
            elif cfg.forget_objective == "grad_ascent":
                forget_loss = grad_ascent_loss(logp, n_tok, weight)
            elif cfg.forget_objective in ("refusal", "alternative"):
                forget_loss = nll_loss(logp, n_tok)
            else:
                forget_loss = torch.zeros((), device=device)
            if others:
                target = torch.cat([blocked[i] for i in f_idx]).to(device)
                forget_loss = forget_loss + cfg.forget_others_kl * others_kl_loss(
                    answer_logits, next_token_ids(fb, fb.target_mask), target)
            retain_loss = torch.zeros((), device=device)
            kl_value = 0.0
            if r_cycle is not None and cfg.retain_objective != "none":
                r_idx = r_cycle.next()
                r_items = [retain[i] for i in r_idx]
                rb = encode(tok, r_items, [p.answer or "" for p in r_items]).to(device)
                known = (torch.cat([base_logits[i] for i in r_idx]).to(device)
                         if base_logits is not None else None)
                retain_loss, kl_value = _retain_term(model, rb, cfg.retain_objective, reference,
                                                     known)
            loss = forget_loss + cfg.retain_weight * retain_loss
            if not math.isfinite(float(loss.detach())):
                raise AgloraError(f"training diverged at step {step} (loss {float(loss)}); lower "
                                  "train.lr or use the npo objective")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            row = {"step": step, "loss": float(loss.detach()),
                   "forget_loss": float(forget_loss.detach()),
                   "retain_loss": float(retain_loss.detach()), "retain_kl": kl_value,
                   "seconds": time.time() - start}
            if choice_items and step % cfg.check_every == 0:
                model.eval()
                check = forget_goal_met(model, tok, choice_items, cfg, chance)
                model.train()
                row.update(train_forget_accuracy=check.accuracy,
                           train_forget_margin=check.margin)
                if cfg.focus_lagging_answers:
                    row["answers_at_goal"] = sorted(check.answers_at_goal)
                    active = [i for i, p in enumerate(forget)
                              if (p.answer or "") not in check.answers_at_goal]
                    f_cycle.restrict(active or list(range(len(forget))))
                if cfg.forget_weight_at_goal != 1.0:
                    item_weight.fill_(1.0)
                    item_weight[[choice_index[i] for i in check.items_at_goal]] = (
                        cfg.forget_weight_at_goal)
                    row["forget_items_at_goal"] = len(check.items_at_goal)
                if check.met and step >= cfg.min_steps:
                    result.stopped_early = True
            result.history.append(row)
            log(_progress_line(row))
            result.steps = step
            if result.stopped_early:
                break
    finally:
        model.eval()
    result.seconds = time.time() - start
    return result
