"""Turn probes into token batches — the one place where prompts meet the chat template.

Recording, training and evaluation all call `context_text`, so a model is never trained with the
chat template and evaluated without it (docs/method.md, section 13). A scored sequence is
`context + joiner + target`; `target_mask` marks the positions whose *next-token prediction* is a
target token, so `logits[:, t]` predicts `input_ids[:, t + 1]` wherever `target_mask[:, t]` is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aglora.concepts import Probe
from aglora.errors import AgloraError

_SENTINEL = "\u2063AGLORA\u2063"


def chat_prefix_text(tok, prompt: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": prompt}],
                                   add_generation_prompt=True, tokenize=False)


def context_text(tok, probe: Probe) -> str:
    """The text the model sees before the scored/generated part (template applied for chat)."""
    if probe.format == "chat":
        return chat_prefix_text(tok, probe.prompt) + probe.prefix
    return probe.prompt


def join_target(context: str, target: str) -> str:
    """Text appended to `context` for `target`: a space unless the context ends in whitespace."""
    if not context or context[-1].isspace() or target[:1].isspace():
        return target
    return " " + target


def content_start(tok, probe: Probe) -> int:
    """Number of leading template tokens (system prompt etc.) shared by every chat prompt."""
    if probe.format != "chat":
        return 0
    cached = getattr(tok, "_aglora_content_start", None)
    if cached is None:
        head = chat_prefix_text(tok, _SENTINEL).split(_SENTINEL)[0]
        cached = len(tok(head, add_special_tokens=False)["input_ids"])
        tok._aglora_content_start = cached
    return cached


def context_ids(tok, probe: Probe, context: str) -> list[int]:
    """Token ids of a probe's context (special tokens added only for plain completions)."""
    return tok(context, add_special_tokens=probe.format == "completion")["input_ids"]


def target_ids(tok, context: str, target: str) -> list[int]:
    """Token ids of `target` as it continues `context` (tokenized on its own, see join_target)."""
    if not target:
        return []
    return tok(join_target(context, target), add_special_tokens=False)["input_ids"]


def context_length(model) -> int | None:
    """The longest sequence the model's positions cover (None when its config does not say)."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def check_lengths(tok, model, probes: list[Probe], what: str, new_tokens: int = 0,
                  fix: str = "shorten the prompt") -> None:
    """Refuse a probe whose context and longest option (or `new_tokens` generated tokens, when
    more) do not fit the model's context; the message names the probe and ends with `fix`."""
    n_ctx = context_length(model)
    if n_ctx is None:
        return
    for probe in probes:
        ctx = context_text(tok, probe)
        options = [probe.answer or "", *probe.distractors]
        longest = max(len(target_ids(tok, ctx, t)) for t in options)
        n = len(context_ids(tok, probe, ctx)) + max(longest, new_tokens)
        if n > n_ctx:
            after = f"{new_tokens} generated tokens" if new_tokens > longest else "its answer"
            raise AgloraError(f"{what} {probe.id or probe.prompt[:40]!r}: {n} tokens with the chat "
                              f"template and {after}, longer than the model's context of "
                              f"{n_ctx}; {fix}")


@dataclass
class Batch:
    input_ids: torch.Tensor       # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq]
    target_mask: torch.Tensor     # [batch, seq] 1 where logits[:, t] predicts a target token
    content_mask: torch.Tensor    # [batch, seq] 1 on non-template, non-pad tokens

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.input_ids, self.attention_mask, self.target_mask, self.content_mask

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in self.tensors()))

    def select(self, rows: list[int]) -> Batch:
        """These rows, trimmed to the longest of them (still right-padded)."""
        index = torch.tensor(rows, device=self.input_ids.device)
        width = int(self.attention_mask[index].sum(-1).max())
        return Batch(*(t[index, :width] for t in self.tensors()))


def pad_right(tok, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows right-padded with the tokenizer's pad id (else 0): input ids [n, width]
    and attention mask [n, width] (1 on each row's own tokens)."""
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
    return input_ids, attention


def encode(tok, probes: list[Probe], targets: list[str], max_len: int = 256,
           contexts: list[str] | None = None) -> Batch:
    """Right-padded batch of context+target sequences for scoring or training."""
    rows, tmask, cstarts = [], [], []
    for i, (probe, target) in enumerate(zip(probes, targets, strict=True)):
        ctx = contexts[i] if contexts is not None else context_text(tok, probe)
        ctx_ids = context_ids(tok, probe, ctx)
        tgt_ids = target_ids(tok, ctx, target)
        ids = (ctx_ids + tgt_ids)[-max_len:]
        n_ctx = len(ids) - len(tgt_ids)
        rows.append(ids)
        tmask.append((max(n_ctx - 1, 0), len(ids) - 1))
        cstarts.append(min(content_start(tok, probe), n_ctx))
    input_ids, attention = pad_right(tok, rows)
    target = torch.zeros(input_ids.shape, dtype=torch.float32)
    content = torch.zeros(input_ids.shape, dtype=torch.float32)
    for i, ids in enumerate(rows):
        lo, hi = tmask[i]
        target[i, lo:hi] = 1.0
        content[i, cstarts[i]: len(ids)] = 1.0
    return Batch(input_ids, attention, target, content)


