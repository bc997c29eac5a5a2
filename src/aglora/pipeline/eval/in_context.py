"""In-context relearning attack: do the forgotten facts come back when some are in the prompt?

No training. The base-known forget probes are split as for the fine-tuning attack (the same
seeded quarter, `relearn.split_attack_set`); the attack quarter's facts, each written as its
question and answer in plain text (`prompt answer`, one a line), go in front of every held-out
probe's prompt, followed by a blank line. For a chat probe that is inside the user message
(the chat template and the assistant prefix are untouched); for a completion probe, plain text
before it. The held-out probes are scored by likelihood choice with that context on the
unlearned model and, for reference, on the base model; without it the scores are the
evaluation's own. `recovered_share` = (accuracy with context - after) / (base - after), the
same on the mean margin.

What it measures: an unlearned model that still holds the facts may give them back once a few
are recalled in the prompt. It also counts plain copying: a held-out probe whose answer is an
attack fact's answer (the same director asked another way) finds that answer in its context,
as the fine-tuning attack trains on it; the base model with the context shows how far the
context alone moves the choice.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from aglora.concepts import Probe
from aglora.model.adapter import adapter_disabled
from aglora.model.likelihood import choice_summary, score_options
from aglora.model.tokens import context_ids, context_length, context_text, target_ids
from aglora.pipeline.eval.relearn import known_forget, recovered_share, split_attack_set


def fact_line(probe: Probe) -> str:
    """One attack fact as plain text: its question (prompt) and its answer."""
    return f"{probe.prompt.strip()} {(probe.answer or '').strip()}"


def context_block(facts: list[Probe]) -> str:
    """The attack facts, one a line."""
    return "\n".join(fact_line(p) for p in facts)


def with_context(probe: Probe, block: str) -> Probe:
    """`probe` with `block` and a blank line in front of its prompt (a chat probe's user
    message; a completion probe's text); everything else unchanged."""
    return dataclasses.replace(probe, prompt=f"{block}\n\n{probe.prompt}",
                               id=f"{probe.id}+context" if probe.id else "")


def longest_sequence(tok, probes: list[Probe]) -> int:
    """Tokens of the longest context + option among `probes`."""
    n = 0
    for p in probes:
        ctx = context_text(tok, p)
        n = max(n, len(context_ids(tok, p, ctx)) + max(
            len(target_ids(tok, ctx, o)) for o in [p.answer or "", *p.distractors]))
    return n


def in_context_attack(model: nn.Module, tok, probes: list[Probe],
                      base_scores: list[list[float]], after_scores: list[list[float]],
                      seed: int = 0, score_batch_size: int = 16,
                      after_model: nn.Module | None = None) -> dict:
    """Score the held-out base-known forget probes with the attack quarter's facts in the prompt:
    on `after_model` (default `model`; e.g. the adapter merged, as the evaluation's after side)
    and on the base (`model` with its adapter disabled).

    `base_scores` / `after_scores`: the evaluation's option scores of every probe (index-aligned
    with `probes`), without the context.
    """
    attack_idx, held_idx = split_attack_set(known_forget(probes, base_scores), seed)
    if not held_idx:
        return {"error": "too few base-known forget probes for the attack"}
    block = context_block([probes[i] for i in attack_idx])
    prompted = [with_context(probes[i], block) for i in held_idx]
    n_ctx, n_seq = context_length(model), longest_sequence(tok, prompted)
    if n_ctx is not None and n_seq > n_ctx:
        return {"error": f"the attack's context makes a probe {n_seq} tokens long, more than "
                         f"the model's context of {n_ctx}"}
    after_ctx = choice_summary(score_options(after_model or model, tok, prompted,
                                             score_batch_size))
    with adapter_disabled(model):
        base_ctx = choice_summary(score_options(model, tok, prompted, score_batch_size))
    base = choice_summary([base_scores[i] for i in held_idx])
    after = choice_summary([after_scores[i] for i in held_idx])
    return {
        "n_context": len(attack_idx), "n_held": len(held_idx),
        "context_tokens": len(tok(block, add_special_tokens=False)["input_ids"]),
        "known_accuracy": {"base": base[0], "after": after[0], "base_with_context": base_ctx[0],
                           "after_with_context": after_ctx[0]},
        "margin": {"base": base[1], "after": after[1], "base_with_context": base_ctx[1],
                   "after_with_context": after_ctx[1]},
        "recovered_share": recovered_share(base[0], after[0], after_ctx[0]),
        "recovered_share_margin": recovered_share(base[1], after[1], after_ctx[1]),
    }
