"""Where a model's neurons are, and the one place where they are observed.

A model's *neurons* are the inputs of each decoder layer's `mlp.down_proj`, i.e. the `d_ff`
entries of `act(gate(h)) * up(h)`; `mlp_layers` finds them in any Llama/Qwen/Mistral-style model
(peft wrappers are looked through). A `NeuronMask` is a 0/1 matrix [n_layers, d_ff] in that index
space, equally the outputs of `gate_proj`/`up_proj`. `capture_neurons` is the only code that puts
hooks on them, inside a context manager that removes every hook on exit, even on an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from aglora.errors import AgloraError


@dataclass
class MlpLayer:
    """One decoder layer's gated MLP; `prefix` is its module path, e.g. 'model.layers.3.mlp'."""

    index: int
    prefix: str
    module: nn.Module

    @property
    def d_ff(self) -> int:
        return self.module.down_proj.in_features


_LAYER_RE = re.compile(r"^(?:.*\.)?layers\.(\d+)\.mlp$")


def mlp_layers(model: nn.Module) -> list[MlpLayer]:
    """All gated MLPs of the decoder, in layer order (peft wrappers are looked through)."""
    found = []
    for name, module in model.named_modules():
        m = _LAYER_RE.match(name)
        if m and all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj")):
            clean = re.sub(r"^base_model\.model\.", "", name)
            found.append(MlpLayer(int(m.group(1)), clean, module))
    if not found:
        raise AgloraError("this model has no Llama/Qwen/Mistral-style gated MLP "
                          "(layers.N.mlp with gate_proj, up_proj, down_proj); aglora cannot "
                          "place neurons in it")
    found.sort(key=lambda x: x.index)
    return found


@dataclass
class NeuronMask:
    mask: torch.Tensor       # [n_layers, d_ff] float 0/1
    layer_indices: list[int]  # model layer index of each row

    @property
    def n_selected(self) -> int:
        return int(self.mask.sum())

    def layers_with_neurons(self) -> list[int]:
        return [self.layer_indices[i] for i in range(self.mask.shape[0]) if self.mask[i].any()]

    def row(self, layer_index: int) -> torch.Tensor:
        return self.mask[self.layer_indices.index(layer_index)]

    def summary(self) -> dict:
        per_layer = {str(li): int(self.mask[i].sum()) for i, li in enumerate(self.layer_indices)}
        return {"n_selected": self.n_selected, "n_total": int(self.mask.numel()),
                "n_layers": self.mask.shape[0], "d_ff": self.mask.shape[1],
                "per_layer": per_layer,
                "selected": {str(li): torch.nonzero(self.mask[i]).flatten().tolist()
                             for i, li in enumerate(self.layer_indices) if self.mask[i].any()}}


@contextmanager
def capture_neurons(layers: list[MlpLayer]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture each layer's down_proj input while the block runs; hooks removed on exit."""
    store: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for layer in layers:
            def hook(_module: nn.Module, args: tuple, idx: int = layer.index) -> None:
                store[idx] = args[0]  # [batch, seq, d_ff]
            handles.append(layer.module.down_proj.register_forward_pre_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def layer_indices(model: nn.Module) -> list[int]:
    """The decoder layer index of each gated MLP, in order."""
    return [layer.index for layer in mlp_layers(model)]
