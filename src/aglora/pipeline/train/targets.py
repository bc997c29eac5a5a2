"""What a training step scores on the forget items: the concept answer, or a replacement.

`answer_batch` encodes the answers NPO and gradient ascent push down; leading words listed in
`train.forget_skip_leading` move into the context (seen, not pushed). `forget_batch` picks the
target by objective: the answer, a refusal (after the chat template's assistant prefix), or an
alternative from the concept spec.
"""

from __future__ import annotations

import random

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.errors import AgloraError
from aglora.model.tokens import Batch, chat_prefix_text, context_text, encode, join_target

ANSWER_OBJECTIVES = ("npo", "grad_ascent")  # forget terms on the concept answer


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


def forget_batch(tok, items: list[Probe], cfg: TrainConfig, refusals: list[str],
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
