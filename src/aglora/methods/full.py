"""Full-parameter baselines on the one training loop: `full_gd` (gradient ascent on forget +
NLL on retain) and `full_npo` (NPO with the run's retain term).

They train a copy of the base model and pass the untouched base as the reference model."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from aglora.methods.base import MethodInputs, Unlearned, fresh_copy, tensor_bytes
from aglora.pipeline.train.loop import train, unfrozen


def _full(base: nn.Module, tok, inp: MethodInputs, forget_objective: str,
          retain_objective: str) -> Unlearned:
    cfg = inp.cfg
    tcfg = dataclasses.replace(cfg.train, forget_objective=forget_objective,
                               retain_objective=retain_objective)
    torch.manual_seed(cfg.train.seed)
    model = fresh_copy(base, inp)
    params = list(model.parameters())  # tied embeddings appear once
    c = inp.concept
    with unfrozen(model, params):
        result = train(model, tok, c.forget, c.retain, tcfg, c.refusals, c.alternatives,
                       log=inp.log, params=params, reference=base)
    n = sum(p.numel() for p in params)
    return Unlearned(model, base, "full", result, n, n, tensor_bytes(params))


def full_gd(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _full(base, tok, inp, "grad_ascent", "nll")


def full_npo(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _full(base, tok, inp, "npo", inp.cfg.train.retain_objective)
