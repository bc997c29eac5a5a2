"""What a training step scores on the forget items: the concept answer, or a replacement.

`answer_batch` encodes the answers NPO and gradient ascent push down; leading words listed in
`train.forget_skip_leading` move into the context (seen, not pushed); `pushed_tokens` says, per
answer token, which tokens any forget answer puts there after the same context (what the
others-KL term leaves out); `retain_blocked_tokens` says the same for the retain items' positions
that share a forget context (what the retain KL leaves out). `response_batch` encodes
what `train.forget_response` teaches in their place: a refusal (after the chat template's
assistant prefix) or an alternative answer.
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


def answer_continuations(tok, items: list[Probe], skip_leading: list[str]
                         ) -> tuple[list[list[tuple[tuple[int, ...], int]]],
                                    dict[tuple[int, ...], set[int]]]:
    """Per item, (token prefix, next token) at each answer token of its `answer_batch` row; and
    per token prefix, every token some item's answer puts after it."""
    rows: list[list[tuple[tuple[int, ...], int]]] = []   # per item: (prefix, next token)
    at: dict[tuple[int, ...], set[int]] = {}
    for p in items:
        b = answer_batch(tok, [p], skip_leading)
        ids = b.input_ids[0].tolist()
        row = [(tuple(ids[: j + 1]), ids[j + 1])
               for j in b.target_mask[0].nonzero()[:, 0].tolist()]
        for prefix, nxt in row:
            at.setdefault(prefix, set()).add(nxt)
        rows.append(row)
    return rows, at


def pushed_tokens(tok, items: list[Probe], skip_leading: list[str]) -> list[list[list[int]]]:
    """Per item, per answer-token position of its `answer_batch` row: every token that some
    item's answer puts at that position after the same context (the same token prefix), its own
    included, sorted. Items that share a prompt and differ in the answer (a ban's titles after
    one list prompt: " Matrix" and " Dark" after "1. The") block each other's token there."""
    rows, at = answer_continuations(tok, items, skip_leading)
    return [[sorted(at[prefix]) for prefix, _ in row] for row in rows]


def retain_blocked_tokens(tok, retain: list[Probe], forget: list[Probe],
                          skip_leading: list[str]) -> list[list[list[int]]] | None:
    """Per retain item, per content position of its `encode` row (the positions the retain KL
    reads): the tokens a forget answer puts after the same token prefix, less the retain item's
    own next token; None when no retain position shares a prefix with a forget answer.

    A ban's retain items sit on the forget items' list prompts (another title after
    "1. The"); without this the retain KL would hold " Matrix" there at its base share, against
    the forget term. Where no retain item shares a forget context (a concept's own questions),
    nothing is blocked and the retain KL is the plain one.
    """
    _, at = answer_continuations(tok, forget, skip_leading)
    out: list[list[list[int]]] = []
    hit = False
    for p in retain:
        b = encode(tok, [p], [p.answer or ""])
        ids = b.input_ids[0].tolist()
        row = []
        for t in b.content_mask[0].nonzero()[:, 0].tolist():
            own = ids[t + 1] if t + 1 < len(ids) else None
            blocked = sorted(at.get(tuple(ids[: t + 1]), set()) - {own})
            hit = hit or bool(blocked)
            row.append(blocked)
        out.append(row)
    return out if hit else None


def response_batch(tok, items: list[Probe], cfg: TrainConfig, refusals: list[str],
                   alternatives: list[str], rng: random.Random) -> tuple[Batch, list[int]] | None:
    """The replacement answers of `train.forget_response` for forget items, with the positions
    (in `items`) they come from; None when there is none to train (`suppress`, or no item fits).

    refuse: a refusal (drawn from `refusals`) right after the chat template's assistant prefix,
    followed by the end-of-turn token, on chat items only (a refusal answers a question; it
    does not continue a sentence).
    alternative: one of the spec's `alternatives`, else one of the item's own distractors, after
    the item's usual context (a plausible answer that is not the concept's).
    """
    if cfg.forget_response == "refuse":
        rows = [i for i, p in enumerate(items) if p.format == "chat"]
        if not rows or not refusals:
            return None
        picked = [items[i] for i in rows]
        contexts = [chat_prefix_text(tok, p.prompt) for p in picked]
        end = tok.eos_token or ""  # the turn ends after the refusal: nothing follows it
        return encode(tok, picked, [rng.choice(refusals) + end for _ in picked],
                      contexts=contexts), rows
    if cfg.forget_response == "alternative":
        rows = [i for i, p in enumerate(items) if alternatives or p.distractors]
        if not rows:
            return None
        picked = [items[i] for i in rows]
        return encode(tok, picked, [rng.choice(alternatives or p.distractors)
                                    for p in picked]), rows
    return None


def check_response_inputs(cfg: TrainConfig, forget: list[Probe], alternatives: list[str]) -> None:
    """Refuse a forget_response that no forget item can train."""
    if cfg.forget_response == "refuse" and not any(p.format == "chat" for p in forget):
        raise AgloraError("train.forget_response=refuse needs chat-format forget items (a refusal"
                          " answers a question); add some, or use suppress or alternative")
    if (cfg.forget_response == "alternative" and not alternatives
            and not any(p.distractors for p in forget)):
        raise AgloraError("train.forget_response=alternative needs 'alternatives:' in the concept"
                          " spec or distractors on the forget items")
