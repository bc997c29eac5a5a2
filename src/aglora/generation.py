"""Batched, seeded generation and the text statistics computed on it.

Greedy generation plus `n_samples` seeded samples per probe, left-padded batches. Chat probes are
generated from the chat template alone (no assistant prefix), so the model answers freely.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm

from aglora.concepts import Probe
from aglora.text import chat_prefix_text


def generation_context(tok, probe: Probe) -> str:
    return chat_prefix_text(tok, probe.prompt) if probe.format == "chat" else probe.prompt


@torch.no_grad()
def generate(model: nn.Module, tok, probes: list[Probe], n_samples: int = 2,
             temperature: float = 0.7, max_new_tokens: int = 32, seed: int = 0,
             batch_size: int = 16, desc: str | None = None) -> list[list[str]]:
    """For each probe: [greedy, sample_1..sample_n] continuations (decoded, special tokens cut)."""
    device = next(model.parameters()).device
    out: list[list[str]] = [[] for _ in probes]
    old_side = tok.padding_side
    tok.padding_side = "left"
    order = sorted(range(len(probes)), key=lambda i: len(probes[i].prompt))
    starts = list(range(0, len(order), batch_size))
    try:
        for s in tqdm(starts, desc=desc, leave=False, disable=desc is None):
            idx = order[s: s + batch_size]
            texts = [generation_context(tok, probes[i]) for i in idx]
            special = [probes[i].format == "completion" for i in idx]
            enc = tok(texts, return_tensors="pt", padding=True,
                      add_special_tokens=all(special)).to(device)
            common = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
            greedy = model.generate(**enc, do_sample=False, **common)
            for row, i in enumerate(idx):
                out[i].append(_decode(tok, greedy[row, enc["input_ids"].shape[1]:]))
            if n_samples:
                torch.manual_seed(seed + s)
                sampled = model.generate(**enc, do_sample=True, temperature=temperature,
                                         top_p=1.0, top_k=0, num_return_sequences=n_samples,
                                         **common)
                for row in range(sampled.shape[0]):
                    i = idx[row // n_samples]
                    out[i].append(_decode(tok, sampled[row, enc["input_ids"].shape[1]:]))
    finally:
        tok.padding_side = old_side
    return out


def _decode(tok, ids: torch.Tensor) -> str:
    return tok.decode(ids, skip_special_tokens=True).strip()


def leaks(text: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, text, flags=re.IGNORECASE) for p in patterns)


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams, pooled over texts (one answer repeated everywhere -> low)."""
    grams = [g for t in texts for g in _ngrams(t.lower().split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(texts: list[str], n: int = 3) -> float:
    """Mean share of repeated n-grams inside each text (loops -> high)."""
    vals = []
    for t in texts:
        grams = _ngrams(t.lower().split(), n)
        if grams:
            vals.append(1 - len(set(grams)) / len(grams))
    return sum(vals) / len(vals) if vals else 0.0
