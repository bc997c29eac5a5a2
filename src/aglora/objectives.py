"""Unlearning loss terms as pure functions, in two small registries.

`loss = forget_term + alpha * retain_term`. Forget terms take the model's summed log-probability
of each forget answer (`logp`, [batch]) and, where they need it, the frozen base model's (`ref`),
or a target NLL; `others_kl` keeps, at the answer's tokens, the base model's distribution over
every other token. Retain terms compare the model's logits with the base model's on retain
sequences. All reductions are means over the batch (or over target tokens for KL/NLL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aglora.errors import AgloraError


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


def kl_base_model(logits: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
    """KL(base || model) per position, averaged. logits, base_logits [n_positions, vocab]."""
    logp = torch.log_softmax(logits.float(), -1)
    base_logp = torch.log_softmax(base_logits.float(), -1)
    return (base_logp.exp() * (base_logp - logp)).sum(-1).mean()


def blocked_distribution(base_logits: torch.Tensor, blocked_ids: torch.Tensor) -> torch.Tensor:
    """The base model's next-token distribution with the blocked token of each position taken
    out and the rest renormalised: what a decode-time blocklist samples from.

    base_logits [n_positions, vocab], blocked_ids [n_positions] -> [n_positions, vocab].
    """
    p = torch.softmax(base_logits.float(), -1)
    p = p.scatter(-1, blocked_ids[:, None], 0.0)
    return p / p.sum(-1, keepdim=True)


def others_kl_loss(logits: torch.Tensor, answer_ids: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
    """KL(target || model without the answer token), averaged over positions.

    Both distributions leave out each position's answer token and are renormalised, so the term
    does not depend on the answer's own logit: it keeps what else the model would say there
    (the base model's `target`, from `blocked_distribution`) while a forget term lowers the
    answer. logits, target [n_positions, vocab]; answer_ids [n_positions].
    """
    masked = logits.float().scatter(-1, answer_ids[:, None], -1e9)
    logq = torch.log_softmax(masked, -1)
    return (torch.xlogy(target, target) - target * logq).sum(-1).mean()


FORGET_OBJECTIVES = ("npo", "grad_ascent", "refusal", "alternative", "none")
RETAIN_OBJECTIVES = ("kl", "nll", "kl+nll", "none")


def check_objectives(forget: str, retain: str) -> None:
    if forget not in FORGET_OBJECTIVES:
        raise AgloraError(f"unknown forget objective {forget!r}; choose from "
                          f"{', '.join(FORGET_OBJECTIVES)}")
    if retain not in RETAIN_OBJECTIVES:
        raise AgloraError(f"unknown retain objective {retain!r}; choose from "
                          f"{', '.join(RETAIN_OBJECTIVES)}")

