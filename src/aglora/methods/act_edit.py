"""Activation edit with no training: overwrite the selected neurons at inference.

A forward pre-hook on each layer's `down_proj` replaces the selected entries of its input `a_l`
([batch, seq, d_ff], the layer's neurons) by zero (`zero`) or by their mean activation on the
retain items (`mean`, a clamp to a neutral value), at every position. Nothing is trained; the
baseline shows how far the selected neurons alone carry the concept. `zero` equals zeroing those
columns of `down_proj`, so it could ship as a weight edit; `mean` equals a bias on `down_proj`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from aglora.errors import AgloraError
from aglora.methods.base import MethodInputs, Unlearned, fresh_copy
from aglora.methods.lora import ag_mask
from aglora.methods.settings import ActEditConfig
from aglora.model.neurons import NeuronMask, mlp_layers
from aglora.pipeline.mask import save_mask
from aglora.pipeline.train.loop import TrainResult


class NeuronEdit:
    """Pre-hook: a -> a * keep + fill, keep/fill [d_ff] (keep 0 and fill = value on selected)."""

    def __init__(self, keep: torch.Tensor, fill: torch.Tensor) -> None:
        self.keep, self.fill = keep, fill

    def __call__(self, _module: nn.Module, args: tuple) -> tuple:
        x = args[0]  # [batch, seq, d_ff]
        keep = self.keep.to(x.device, x.dtype)
        fill = self.fill.to(x.device, x.dtype)
        return (x * keep + fill, *args[1:])


def apply_edit(model: nn.Module, mask: NeuronMask, mode: str = "zero",
               retain_mean: torch.Tensor | None = None) -> list[RemovableHandle]:
    """Register the edit on `model` (in place); returns the hook handles (remove to undo).

    mask.mask and retain_mean are [n_layers, d_ff] in the order of `mask.layer_indices`.
    """
    ActEditConfig(mode)  # validates the mode
    if mode == "mean" and retain_mean is None:
        raise AgloraError("act_edit.mode=mean needs the retain activation means (record stage)")
    by_index = {layer.index: layer for layer in mlp_layers(model)}
    handles = []
    for row, li in enumerate(mask.layer_indices):
        m = mask.mask[row].float()  # [d_ff]
        if not m.any():
            continue
        if li not in by_index or by_index[li].d_ff != m.numel():
            raise AgloraError(f"the mask does not fit this model (layer {li})")
        fill = m * retain_mean[row].float() if mode == "mean" else torch.zeros_like(m)
        hook = NeuronEdit(1.0 - m, fill)
        handles.append(by_index[li].module.down_proj.register_forward_pre_hook(hook))
    return handles


def act_edit(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    mask = ag_mask(base, inp)
    model = fresh_copy(base, inp)
    apply_edit(model, mask, inp.act_edit.mode, inp.retain_mean)
    if inp.out_dir is not None:
        save_mask(mask, inp.out_dir)
        nbytes = (inp.out_dir / "masks.safetensors").stat().st_size
    else:
        nbytes = mask.n_selected * 8  # (layer, neuron) as two int32
    return Unlearned(model, base, "edit", TrainResult(), 0, 0, nbytes, mask)
