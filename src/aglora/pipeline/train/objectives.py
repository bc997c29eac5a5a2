"""Training objectives: the loss functions, and the default forget + retain objective.

The loss functions are plain tensor maths with a unit test each. `AnswerObjective` is the loss
the training loop optimises by default (`train.forget_objective` + `train.retain_objective`):

    loss = forget term on the answers (npo | grad_ascent | none)
           [+ forget_name_weight * name misdirection at the concept's name tokens]
           [+ forget_others_kl * KL at the answer tokens, all tokens but those a forget
              answer puts there after the same context]
           [+ response_weight * NLL of the replacement (forget_response refuse | alternative)]
           + retain_weight * (retain term (kl | nll | kl+nll | none; the KL leaves out, at a
                              retain position after a forget context, the forget answers'
                              tokens there)
                              [+ refusal_contrast * NPO on a refusal after the retain
                                 items' chat questions (forget_response refuse)])

NPO's push on an answer fades as the answer falls below the reference (its weight is
2 sigmoid(beta x), x = log pi - log pi_ref). With the base model as the reference, an answer the
base model favours by a wide margin (a ban's most recommended title) reaches that fade before it
falls to its distractors, while the others go far past theirs. `train.npo_reference
distractors` takes the reference down by each item's base margin over its best distractor, so
x counts from parity with the distractors: full strength until the answer falls to them, fading
past them, for every item alike.

`refuse` and `alternative` add a supervised term toward what the model should say instead (a
refusal after chat questions, or another answer) to the suppression term, rather than replacing
it: the refusal alone teaches a new first sentence but leaves the concept's answer as likely
as before after a leading prefix, which the likelihood probes (and an attacker) read.

The refusal contrast is there because a refusal learnt on the concept's questions alone spreads:
the masked neurons fire on other questions too, and without a counter-example the adapter
learns "refuse" rather than "refuse this concept". NPO on the refusal (reference: the base
model's log-probability of the same refusal after the same question) pushes it down on the
retain questions only while it is likelier than in the base model, and saturates once it is
a few nats below, so it costs nothing where the forget side does not raise it.

A method with another loss (RMU) supplies its own object with the same three members
(`uses_retain`, `retain_weight`, `forget_loss`, `retain_loss`) and runs the same loop.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig, check_response
from aglora.errors import AgloraError
from aglora.model.forward import (
    logits_at,
    logits_at_each,
    target_logprobs_from_logits,
)
from aglora.model.tokens import Batch, encode
from aglora.pipeline.train.misdirect import NameMisdirection
from aglora.pipeline.train.reference import (
    base_answer_side,
    base_margins,
    base_view,
    cached_base_logits,
    kl_target,
    mask_from_lists,
    negative_entropy,
)
from aglora.pipeline.train.targets import (
    ANSWER_OBJECTIVES,
    answer_batch,
    pushed_tokens,
    response_batch,
    retain_blocked_tokens,
)


def npo_loss(logp: torch.Tensor, ref: torch.Tensor, beta: float,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """NPO (Zhang et al. 2024): -(2/beta) log sigmoid(-beta (log pi - log pi_ref)), batch mean
    (each item's term times `weight` [batch] when given)."""
    term = -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref))  # [batch]
    return (term if weight is None else term * weight).mean()


def grad_ascent_loss(logp: torch.Tensor, n_tokens: torch.Tensor,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient ascent: minimise the (token-mean) log-likelihood of the answers. Unbounded.
    `weight` [batch] scales each item's term."""
    term = logp / n_tokens.clamp_min(1)  # [batch]
    return (term if weight is None else term * weight).mean()


def nll_loss(logp: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood (SFT toward a refusal or alternative target)."""
    return -(logp / n_tokens.clamp_min(1)).mean()


def kl_to_target(logits: torch.Tensor, target: torch.Tensor, neg_entropy: torch.Tensor,
                 blocked: torch.Tensor | None = None) -> torch.Tensor:
    """KL(target || softmax of `logits` without the `blocked` tokens), averaged over positions.

    `target` is zero at its blocked tokens, so sum_v t_v log q_v = sum_v t_v z_v - S L, with L
    the logsumexp of z without the blocked tokens and S = sum_v t_v, and the KL is `neg_entropy`
    (sum_v t_v log t_v, fixed: `kl_target`) minus that: no [n, vocab] log-probabilities are
    formed, and the gradient is softmax(z) - t as for the explicit sum. S is one but for float
    rounding, and that rounding times L would otherwise shift the term by more than the KL
    near the base.
    logits, target [n_positions, vocab]; neg_entropy [n_positions]; blocked [n_positions, vocab]
    bool (`mask_from_lists`) or None (nothing blocked, as is an all-false mask).
    """
    z = logits.float()
    masked = z if blocked is None or not bool(blocked.any()) else z.masked_fill(blocked, -1e9)
    lse = torch.logsumexp(masked, -1)  # [n_positions]
    return (neg_entropy - torch.linalg.vecdot(target, z) + lse * target.sum(-1)).mean()


def kl_base_model(logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """KL(base || model) per position, averaged, as the explicit sum of p (log p - log q):
    accurate to float rounding however close the model is to the base (the evaluation's
    metric; training uses `kl_to_target`, whose large cancelling terms leave a small absolute
    error). logits, base_logits [n_positions, vocab]."""
    logp = torch.log_softmax(logits.float(), -1)
    base_logp = torch.log_softmax(base_logits.float(), -1)
    return (base_logp.exp() * (base_logp - logp)).sum(-1).mean()


def others_kl_loss(logits: torch.Tensor, blocked: torch.Tensor, target: torch.Tensor,
                   neg_entropy: torch.Tensor | None = None) -> torch.Tensor:
    """KL(target || model without the blocked tokens), averaged over positions.

    Both distributions leave out each position's blocked tokens (its answer token, and the
    tokens other forget answers put after the same context) and are renormalised, so the term
    does not depend on those logits: it keeps what else the model would say there (the base
    model's `target`, from `blocked_distribution`) while the forget term lowers the answers.
    logits, target [n_positions, vocab]; blocked [n_positions, vocab] bool (`mask_from_lists`);
    neg_entropy [n_positions]: the target's, if already known (`negative_entropy`).
    """
    if neg_entropy is None:
        neg_entropy = negative_entropy(target)
    return kl_to_target(logits, target, neg_entropy, blocked)


RETAIN_OBJECTIVES = ("kl", "nll", "kl+nll", "none")


def check_objectives(forget: str, retain: str, response: str = "suppress") -> None:
    check_response(forget, response)
    if retain not in RETAIN_OBJECTIVES:
        raise AgloraError(f"unknown retain objective {retain!r}; choose from "
                          f"{', '.join(RETAIN_OBJECTIVES)}")


def _retain_term(model: nn.Module, rb: Batch, objective: str, reference: nn.Module | None,
                 target: tuple[torch.Tensor, torch.Tensor] | None = None,
                 blocked_ids: list[list[int]] | None = None) -> tuple[torch.Tensor, float]:
    """(retain loss, its KL part) on a retain batch for objective kl | nll | kl+nll.

    `target`: the KL's base side at the batch's content positions (`kl_target`: the base
    distribution [n_content, vocab] without the blocked tokens, and its negative entropy
    [n_content]) if already known (else computed here). `blocked_ids`: per content position,
    the tokens the KL leaves out there (`retain_blocked_tokens`), or None.
    """
    # One decoder pass serves both terms; logits only at the positions a term needs.
    wants_kl, wants_nll = "kl" in objective, "nll" in objective
    content_logits, target_logits = logits_at_each(
        model, rb, [rb.content_mask if wants_kl else torch.zeros_like(rb.content_mask),
                    rb.target_mask if wants_nll else torch.zeros_like(rb.target_mask)])
    loss = torch.zeros((), device=rb.input_ids.device)
    kl_value = 0.0
    if wants_kl:
        blocked = (mask_from_lists(blocked_ids, content_logits.shape[-1], content_logits.device)
                   if blocked_ids is not None else None)
        if target is None:
            with torch.no_grad(), base_view(model, reference) as ref_model:
                target = kl_target(logits_at(ref_model, rb, rb.content_mask), blocked)
        kl = kl_to_target(content_logits, *target, blocked)
        kl_value = float(kl.detach())
        loss = loss + kl
    if wants_nll:
        loss = loss + nll_loss(target_logprobs_from_logits(target_logits, rb),
                               rb.target_mask.sum(-1))
    return loss, kl_value


class AnswerObjective:
    """The default objective on the concept's answers (see the module docstring).

    The base model's side is computed once, before the first step: NPO's reference
    log-probabilities of the forget answers, the `forget_others_kl` targets with their negative
    entropies, and the retain KL's base side (`kl_target` of the retain items' base logits, kept
    while the logits fit in `BASE_LOGITS_CACHE_BYTES`, else recomputed per step, which gives the
    same loss). `reference` plays the base (default: `model` with its
    adapter disabled).
    """

    def __init__(self, model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
                 cfg: TrainConfig, refusals: list[str] | None = None,
                 alternatives: list[str] | None = None,
                 reference: nn.Module | None = None, names: list[str] | None = None,
                 name_layer: int | None = None) -> None:
        check_objectives(cfg.forget_objective, cfg.retain_objective, cfg.forget_response)
        if cfg.forget_objective in ANSWER_OBJECTIVES and any(not p.answer for p in forget):
            raise AgloraError(f"forget_objective={cfg.forget_objective} needs an 'answer' on "
                              "every forget item")
        self.tok, self.forget, self.retain, self.cfg = tok, forget, retain, cfg
        self.refusals, self.alternatives = refusals or [], alternatives or []
        self.reference = reference
        self.retain_weight = cfg.retain_weight
        self.uses_retain = bool(retain) and cfg.retain_objective != "none"
        self.others = cfg.forget_others_kl > 0 and cfg.forget_objective in ANSWER_OBJECTIVES
        # per item, per answer token: what the others-KL term leaves out there
        self.blocked_ids = (pushed_tokens(tok, forget, cfg.forget_skip_leading) if self.others
                            else None)
        self.ref_logp, self.blocked = base_answer_side(
            model, tok, forget, cfg, reference, cfg.forget_objective == "npo", self.blocked_ids)
        if cfg.forget_objective == "npo" and cfg.npo_reference == "distractors":
            # x = log pi - ref = (drop from the base) + (base lead over the best distractor)
            self.ref_logp = self.ref_logp - base_margins(model, tok, forget, reference)
        self.blocked_negent = [negative_entropy(t) for t in self.blocked]  # per item [n_i]
        # per retain item, per content position: the forget answers' tokens the KL leaves out
        self.retain_blocked = (retain_blocked_tokens(tok, retain, forget, cfg.forget_skip_leading)
                               if self.uses_retain and "kl" in cfg.retain_objective
                               and cfg.forget_objective in ANSWER_OBJECTIVES else None)
        # per retain item: the KL's base side at its content positions (`kl_target`)
        self.retain_targets = (self._retain_targets(cached_base_logits(
            model, tok, retain, cfg.batch_size, reference))
            if "kl" in cfg.retain_objective else None)
        self.contrast = (cfg.forget_response == "refuse" and cfg.refusal_contrast > 0
                         and bool(self.refusals) and any(p.format == "chat" for p in retain))
        self.contrast_rng = random.Random(cfg.seed + 1)  # the refusals drawn for retain items
        self.misdirect = None
        if cfg.forget_name_weight > 0:
            if name_layer is None:
                raise AgloraError("train.forget_name_weight needs the layer to read (the run's "
                                  "deepest masked layer)")
            self.misdirect = NameMisdirection(model, tok, forget, names or [], name_layer,
                                              cfg.forget_name_shift, cfg.seed, reference)

    def _retain_targets(self, logits: list[torch.Tensor] | None
                        ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per retain item, `kl_target` of its cached base logits (None: none were cached)."""
        if logits is None:
            return None
        out = []
        for i, item_logits in enumerate(logits):
            blocked = (mask_from_lists(self.retain_blocked[i], item_logits.shape[-1])
                       if self.retain_blocked is not None else None)
            out.append(kl_target(item_logits, blocked))
            logits[i] = None  # each item's logits go once its target is made
        return out

    def forget_loss(self, model: nn.Module, f_idx: list[int], weight: torch.Tensor,
                    rng: random.Random) -> torch.Tensor:
        """The forget term on forget items `f_idx`; `weight` [batch] scales each item's term."""
        cfg, device = self.cfg, weight.device
        items = [self.forget[i] for i in f_idx]
        loss = torch.zeros((), device=device)
        if cfg.forget_objective in ANSWER_OBJECTIVES:
            fb = answer_batch(self.tok, items, cfg.forget_skip_leading).to(device)
            answer_logits = logits_at(model, fb, fb.target_mask)  # [n_target_tokens, vocab]
            logp = target_logprobs_from_logits(answer_logits, fb)  # [batch]
            if cfg.forget_objective == "npo":
                loss = npo_loss(logp, self.ref_logp[f_idx].to(device), cfg.npo_beta, weight)
            else:
                loss = grad_ascent_loss(logp, fb.target_mask.sum(-1), weight)
            if self.others:
                target = torch.cat([self.blocked[i] for i in f_idx]).to(device)
                negent = torch.cat([self.blocked_negent[i] for i in f_idx]).to(device)
                blocked = mask_from_lists([ids for i in f_idx for ids in self.blocked_ids[i]],
                                          answer_logits.shape[-1], device)
                loss = loss + cfg.forget_others_kl * others_kl_loss(answer_logits, blocked,
                                                                    target, negent)
        if self.misdirect is not None:
            loss = loss + cfg.forget_name_weight * self.misdirect.loss(model, f_idx, device)
        response = response_batch(self.tok, items, cfg, self.refusals, self.alternatives, rng)
        if response is not None:
            rb = response[0].to(device)
            r_logp = target_logprobs_from_logits(logits_at(model, rb, rb.target_mask), rb)
            loss = loss + cfg.response_weight * nll_loss(r_logp, rb.target_mask.sum(-1))
        return loss

    def retain_loss(self, model: nn.Module, r_idx: list[int],
                    device: torch.device) -> tuple[torch.Tensor, float | None]:
        """(retain term, its KL part) on retain items `r_idx`."""
        items = [self.retain[i] for i in r_idx]
        rb = encode(self.tok, items, [p.answer or "" for p in items]).to(device)
        known = ((torch.cat([self.retain_targets[i][0] for i in r_idx]).to(device),
                  torch.cat([self.retain_targets[i][1] for i in r_idx]).to(device))
                 if self.retain_targets is not None else None)
        blocked = ([ids for i in r_idx for ids in self.retain_blocked[i]]
                   if self.retain_blocked is not None else None)
        loss, kl_value = _retain_term(model, rb, self.cfg.retain_objective, self.reference, known,
                                      blocked)
        if self.contrast:
            loss = loss + self.cfg.refusal_contrast * self.refusal_contrast(model, items, device)
        return loss, kl_value

    def refusal_contrast(self, model: nn.Module, items: list[Probe],
                         device: torch.device) -> torch.Tensor:
        """NPO on a drawn refusal after each chat retain item's question, against the base
        model's log-probability of the same text (zero when no item is a chat question)."""
        response = response_batch(self.tok, items, self.cfg, self.refusals, [],
                                  self.contrast_rng)
        if response is None:
            return torch.zeros((), device=device)
        rb = response[0].to(device)
        logp = target_logprobs_from_logits(logits_at(model, rb, rb.target_mask), rb)  # [rows]
        with torch.no_grad(), base_view(model, self.reference) as base:
            ref = target_logprobs_from_logits(logits_at(base, rb, rb.target_mask), rb)
        return npo_loss(logp, ref, self.cfg.npo_beta)
