"""Name misdirection: the concept's representation at its name's tokens moved off its base value.

The answer terms (NPO) lower each trained fact after its own question, and a fact the spec does
not list is left as it was: the held-out validation facts of a concept stay known while the
trained ones fall to chance. A transformer reads the facts it knows about an entity from the
representation its early and middle MLP layers build at the entity's name tokens (Geva et al.
2023, "Dissecting recall of factual associations"; Guo et al. 2024, "Mechanistic unlearning",
who found unlearning confined to that fact-lookup stage more robust than unlearning localised at
the outputs). The activation-guided mask already lies in those layers; this term asks the
adapter to move the residual stream after the deepest masked layer, at the positions of the
concept's name in the forget items' contexts, towards a fixed random direction (the target of
RMU, Li et al. 2024, WMDP), scaled to each position's own norm:

    target_p = h_base_p + shift * ||h_base_p|| * u     u: a seeded random unit vector [d_model]
    loss     = mean_p ||h_p - target_p||^2 / (shift * ||h_base_p||)^2

The loss is 1 before the first step (the adapter starts at zero) and 0 at the target: bounded,
unlike gradient ascent, and scale-free across layers and models. Positions are the context tokens
whose characters overlap a whole-word match of a name word (case-insensitive); items whose
context does not name the concept (the description form) add nothing. The retain terms keep
every other name's representation where it was. The forward pass stops after the layer it reads.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.errors import AgloraError
from aglora.model.forward import causal_lm
from aglora.model.tokens import context_ids, context_text, pad_right
from aglora.pipeline.train.reference import base_view


class _Stop(Exception):
    """Raised by the hook once the layer that is read has run (the rest is not needed)."""


def name_spans(text: str, names: list[str]) -> list[tuple[int, int]]:
    """Character spans of whole-word, case-insensitive matches of any of `names` in `text`."""
    spans = []
    for word in names:
        spans += [m.span() for m in re.finditer(rf"\b{re.escape(word)}\b", text, re.IGNORECASE)]
    return sorted(set(spans))


def name_positions(tok, probe: Probe, names: list[str]) -> list[int]:
    """Indices of the context tokens (as `model.tokens.encode` lays them out) that overlap a
    name in the probe's context text."""
    text = context_text(tok, probe)
    spans = name_spans(text, names)
    if not spans:
        return []
    enc = tok(text, add_special_tokens=probe.format == "completion", return_offsets_mapping=True)
    return [i for i, (a, b) in enumerate(enc["offset_mapping"])
            if b > a and any(a < hi and b > lo for lo, hi in spans)]


def hidden_after(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 layer: int) -> torch.Tensor:
    """The residual stream after decoder layer `layer` [batch, seq, d_model]; the layers after
    it are not run."""
    layers = causal_lm(model).get_decoder().layers
    if not 0 <= layer < len(layers):
        raise AgloraError(f"name misdirection reads layer {layer}; the model has {len(layers)}")
    seen: list[torch.Tensor] = []

    def hook(_module, _args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = layers[layer].register_forward_hook(hook)
    try:
        causal_lm(model).get_decoder()(input_ids=input_ids, attention_mask=attention_mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def _contexts(tok, items: list[Probe]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded context token ids [batch, seq] and attention mask [batch, seq]."""
    return pad_right(tok, [context_ids(tok, p, context_text(tok, p)) for p in items])


class NameMisdirection:
    """The term on forget items (see the module docstring). `base` plays the base model
    (default: `model` with its adapter off); `layer` is the decoder layer whose output is read."""

    def __init__(self, model: nn.Module, tok, forget: list[Probe], names: list[str], layer: int,
                 shift: float, seed: int = 0, base: nn.Module | None = None,
                 batch_size: int = 32) -> None:
        if shift <= 0:
            raise AgloraError(f"train.forget_name_shift={shift}: give a positive size")
        if not names:
            raise AgloraError("name misdirection needs the concept's name words")
        self.tok, self.forget, self.layer, self.shift = tok, forget, layer, shift
        self.positions = [name_positions(tok, p, names) for p in forget]
        if not any(self.positions):
            raise AgloraError(f"no forget item's context names the concept ({', '.join(names)});"
                              " set train.forget_name_weight=0")
        d_model = causal_lm(model).config.hidden_size
        gen = torch.Generator().manual_seed(seed)
        u = torch.randn(d_model, generator=gen)
        self.direction = u / u.norm()  # [d_model]
        self.base_hidden: list[torch.Tensor | None] = [None] * len(forget)  # [n_pos_i, d_model]
        named = [i for i, pos in enumerate(self.positions) if pos]
        with torch.no_grad():
            for lo in range(0, len(named), batch_size):
                idx = named[lo:lo + batch_size]
                with base_view(model, base) as ref_model:
                    hidden = self._hidden(ref_model, idx)
                for i, h in zip(idx, hidden, strict=True):
                    self.base_hidden[i] = h.detach().cpu()

    def _hidden(self, model: nn.Module, idx: list[int]) -> list[torch.Tensor]:
        """Per item of `idx`, the hidden states at its name positions [n_pos_i, d_model]."""
        device = next(model.parameters()).device
        ids, mask = _contexts(self.tok, [self.forget[i] for i in idx])
        hidden = hidden_after(model, ids.to(device), mask.to(device), self.layer)
        return [hidden[row, self.positions[i]] for row, i in enumerate(idx)]

    def loss(self, model: nn.Module, f_idx: list[int], device: torch.device) -> torch.Tensor:
        """The mean normalised squared distance to the targets over the named items of `f_idx`
        (zero, with a graph, when none of them names the concept)."""
        idx = [i for i in f_idx if self.positions[i]]
        if not idx:
            return torch.zeros((), device=device)
        now = torch.cat(self._hidden(model, idx))  # [n_pos, d_model]
        base = torch.cat([self.base_hidden[i] for i in idx]).to(now)  # [n_pos, d_model]
        size = self.shift * base.norm(dim=-1, keepdim=True)  # [n_pos, 1]
        target = base + size * self.direction.to(now)
        return (((now - target) / size) ** 2).sum(-1).mean()
