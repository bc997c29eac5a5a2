"""A tiny model loader and answer log-probs for the controlled-track tests."""

from __future__ import annotations

import torch

from aglora.model.forward import target_logprobs
from aglora.model.tokens import encode
from tests.tiny import make_model, make_tokenizer


def tiny_loader():
    return make_model(), make_tokenizer()


def logp(model, tok, items):
    with torch.no_grad():
        return target_logprobs(model, encode(tok, items, [p.answer for p in items]))
