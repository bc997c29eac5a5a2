"""Reference implementations the tests hold the fast paths to (slow and simple on purpose)."""

from __future__ import annotations

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.model.forward import target_logprobs
from aglora.model.tokens import Batch, encode


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, t+1] | ...) at every position t; last position gets 0.

    logits [batch, seq, vocab] -> [batch, seq]
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [batch, seq-1]
    return torch.nn.functional.pad(picked, (0, 1))


def sequence_logprob(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed log-probability of the target tokens of each sequence -> [batch]."""
    return (token_logprobs(logits, batch.input_ids) * batch.target_mask).sum(-1)


@torch.no_grad()
def score_options_reference(model: nn.Module, tok, probes: list[Probe]) -> list[list[float]]:
    """One context+option sequence per option (slow, simple): the reference for tests."""
    out: list[list[float]] = []
    for p in probes:
        if not p.has_choice:
            out.append([])
            continue
        options = [p.answer, *p.distractors]
        batch = encode(tok, [p] * len(options), options)
        out.append(target_logprobs(model, batch, share_prefix=False).tolist())
    return out
