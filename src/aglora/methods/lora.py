"""LoRA methods: `ag_lora` (masked to the activation-guided neurons), `plain_lora` (no mask,
every layer) and `random_lora` (masked to as many neurons chosen at random, the ablation).

All three train with the run's objective on the one training loop; only the mask differs."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from aglora.errors import AgloraError
from aglora.methods.base import MethodInputs, Unlearned, fresh_copy, tensor_bytes
from aglora.model.neurons import NeuronMask, layer_indices, mlp_layers
from aglora.pipeline.mask import select
from aglora.pipeline.score import random_score
from aglora.pipeline.train.loop import train


def ag_mask(base: nn.Module, inp: MethodInputs) -> NeuronMask:
    if inp.scores is None:
        raise AgloraError("this method needs the activation-guided scores (record + score)")
    return NeuronMask(select(inp.scores, inp.cfg.mask), layer_indices(base))


def random_mask(base: nn.Module, inp: MethodInputs) -> NeuronMask:
    """As many neurons as the AG mask selects, chosen uniformly at random (seeded by train.seed)."""
    layers = mlp_layers(base)
    shape = (len(layers), layers[0].d_ff)
    score = random_score({"forget.saliency": torch.zeros(shape)}, 0.0, 0.0, inp.cfg.train.seed)
    return NeuronMask(select(score, inp.cfg.mask), layer_indices(base))


def _lora(base: nn.Module, tok, inp: MethodInputs, mask: NeuronMask | None) -> Unlearned:
    from aglora.model.adapter import attach_lora, count_parameters, save_adapter
    cfg = inp.cfg
    lcfg = (dataclasses.replace(cfg.lora, masked=True, all_layers=False) if mask is not None
            else dataclasses.replace(cfg.lora, masked=False, all_layers=True))
    torch.manual_seed(cfg.train.seed)
    model = attach_lora(fresh_copy(base, inp), mask, lcfg)
    c = inp.concept
    result = train(model, tok, c.forget, c.retain, cfg.train, c.refusals, c.alternatives,
                   log=inp.log)
    trainable, effective, _ = count_parameters(model)
    if inp.out_dir is not None:
        meta = {"concept": c.name, "masked": mask is not None,
                "mask": mask.summary() if mask is not None else None}
        nbytes = save_adapter(model, inp.out_dir / "adapter", meta)
    else:  # the adapter's tensors alone
        nbytes = tensor_bytes([p for n, p in model.named_parameters() if "lora_" in n])
    return Unlearned(model, base, "adapter", result, trainable, effective, nbytes, mask)


def ag_lora(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _lora(base, tok, inp, ag_mask(base, inp))


def plain_lora(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _lora(base, tok, inp, None)


def random_lora(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _lora(base, tok, inp, random_mask(base, inp))
