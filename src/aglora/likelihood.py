"""Likelihood-choice scoring: does the answer beat every distractor?

For a probe with an answer and distractors, each option is scored as the *summed* log-probability
of its tokens after the probe's context (summed, not averaged: on thin knowledge the sum is the
sharper instrument, DESIGN.md section 5). Options of many probes are batched together.
"""

from __future__ import annotations

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.forward import target_logprobs
from aglora.text import encode


def score_options(model: nn.Module, tok, probes: list[Probe], batch_size: int = 16,
                  progress: str | None = None) -> list[list[float]]:
    """Summed log-prob of [answer, *distractors] for each probe with a choice ([] otherwise)."""
    return score_options_with_lengths(model, tok, probes, batch_size, progress)[0]


@torch.no_grad()
def score_options_with_lengths(model: nn.Module, tok, probes: list[Probe], batch_size: int = 16,
                               progress: str | None = None
                               ) -> tuple[list[list[float]], list[list[int]]]:
    """(summed log-probs, token counts) of [answer, *distractors] for each probe."""
    flat: list[tuple[int, Probe, str]] = []
    for i, p in enumerate(probes):
        if p.has_choice:
            for opt in [p.answer, *p.distractors]:
                flat.append((i, p, opt))
    # Sort by length so batches pad little; results go back to their probe.
    order = sorted(range(len(flat)), key=lambda j: len(flat[j][1].prompt) + len(flat[j][2]))
    values = [0.0] * len(flat)
    lengths = [0] * len(flat)
    device = next(model.parameters()).device
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=progress, leave=False)
    for s in starts:
        idx = order[s: s + batch_size]
        batch = encode(tok, [flat[j][1] for j in idx], [flat[j][2] for j in idx]).to(device)
        sums = target_logprobs(model, batch).tolist()
        counts = batch.target_mask.sum(-1).long().tolist()
        for j, v, n in zip(idx, sums, counts, strict=True):
            values[j], lengths[j] = v, n
    out: list[list[float]] = [[] for _ in probes]
    out_len: list[list[int]] = [[] for _ in probes]
    for (i, _p, _opt), v, n in zip(flat, values, lengths, strict=True):
        out[i].append(v)
        out_len[i].append(n)
    return out, out_len


def choice_correct(scores: list[float]) -> bool:
    """Answer (index 0) strictly beats every distractor."""
    return len(scores) > 1 and all(scores[0] > s for s in scores[1:])


def margin(scores: list[float]) -> float:
    """Answer log-prob minus the best distractor's (nats)."""
    return scores[0] - max(scores[1:])


def truth_ratio(scores: list[float], lengths: list[int]) -> float:
    """TOFU's truth ratio: mean length-normalised P(distractor) over P(answer)^(1/|answer|)."""
    import math

    norm = [s / max(n, 1) for s, n in zip(scores, lengths, strict=True)]
    return sum(math.exp(x - norm[0]) for x in norm[1:]) / (len(norm) - 1)


def choice_summary(scores: list[list[float]]) -> tuple[float, float]:
    """(accuracy, mean margin) over the probes that have options."""
    rows = [s for s in scores if len(s) > 1]
    if not rows:
        return float("nan"), float("nan")
    acc = sum(choice_correct(s) for s in rows) / len(rows)
    return acc, sum(margin(s) for s in rows) / len(rows)
