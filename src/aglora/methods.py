"""Unlearning methods behind one registry, for side-by-side comparison (`aglora bench`).

Every method takes the frozen base model and returns an `Unlearned`: the model after unlearning
(`after`), the untouched base (`base`) and what it cost. Methods never modify the base model they
are given; each works on its own deep copy, so the base side of an evaluation can be computed
once and reused, and the base serves as the frozen reference of NPO, KL and RMU.

- `ag_lora`      LoRA confined to the activation-guided neurons (ours)
- `plain_lora`   the same LoRA objective and rank on every layer, no mask
- `random_lora`  masked LoRA on as many neurons, chosen at random (the ablation)
- `full_gd`      full-parameter gradient difference (ascent on forget, NLL on retain)
- `full_npo`     full-parameter NPO with the run's retain term
- `rmu`          representation misdirection on a few layers' MLP (WMDP)
- `act_edit`     no training: the selected neurons zeroed or clamped at inference

All trained methods share the step budget, batching and early stopping of `train.train` (RMU has
its own loss but the same loop structure).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aglora.act_edit import ActEditConfig, apply_edit
from aglora.concepts import ConceptSpec
from aglora.config import RunConfig
from aglora.errors import AgloraError
from aglora.masks import NeuronMask, save_mask, select
from aglora.models import mlp_layers
from aglora.rmu import RmuConfig, rmu_parameters, train_rmu
from aglora.scoring import random_score
from aglora.train import TrainResult, train, unfrozen


@dataclass
class MethodInputs:
    """What a method may use besides the base model: config, concept and shared statistics."""

    cfg: RunConfig
    concept: ConceptSpec
    scores: torch.Tensor | None = None       # AG neuron scores [n_layers, d_ff]
    retain_mean: torch.Tensor | None = None  # mean retain activation [n_layers, d_ff]
    rmu: RmuConfig = field(default_factory=RmuConfig)
    act_edit: ActEditConfig = field(default_factory=ActEditConfig)
    out_dir: Path | None = None               # where the method writes its artifact
    work: nn.Module | None = None             # a fresh deep copy of the base to work on
                                              # (made by the caller, e.g. outside a memory
                                              # measurement); None = the method copies
    log: Callable[[str], None] = print


@dataclass
class Unlearned:
    """The result of one method: the model after, the base before, and the cost."""

    after: nn.Module
    base: nn.Module
    kind: str                       # "adapter" | "full" | "edit"
    train: TrainResult
    trainable_params: int           # parameters that received gradients
    effective_params: int           # of those, entries not fixed at zero by a mask
    artifact_bytes: int             # what ships: adapter files, changed weights, or the mask
    mask: NeuronMask | None = None

    def attack_copy(self) -> nn.Module:
        """A standalone copy of the after model for the relearning attack (adapters merged)."""
        attacked = copy.deepcopy(self.after)
        if hasattr(attacked, "merge_and_unload"):
            attacked = attacked.merge_and_unload()
        return attacked


Method = Callable[[nn.Module, object, MethodInputs], Unlearned]


@dataclass
class MethodSpec:
    fn: Method
    help: str
    seeded: bool = True       # False: the result does not depend on the seed (run one seed)


METHODS: dict[str, MethodSpec] = {}


def register(name: str, help: str, seeded: bool = True) -> Callable[[Method], Method]:
    def deco(fn: Method) -> Method:
        METHODS[name] = MethodSpec(fn, help, seeded)
        return fn
    return deco


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise AgloraError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


# ---- helpers -----------------------------------------------------------------------------------
def _layer_indices(model: nn.Module) -> list[int]:
    return [layer.index for layer in mlp_layers(model)]


def ag_mask(base: nn.Module, inp: MethodInputs) -> NeuronMask:
    if inp.scores is None:
        raise AgloraError("this method needs the activation-guided scores (record + score)")
    return NeuronMask(select(inp.scores, inp.cfg.mask), _layer_indices(base))


def random_mask(base: nn.Module, inp: MethodInputs) -> NeuronMask:
    """As many neurons as the AG mask selects, chosen uniformly at random (seeded by train.seed)."""
    layers = mlp_layers(base)
    shape = (len(layers), layers[0].d_ff)
    score = random_score({"forget.saliency": torch.zeros(shape)}, 0.0, 0.0, inp.cfg.train.seed)
    return NeuronMask(select(score, inp.cfg.mask), _layer_indices(base))


def _fresh_copy(base: nn.Module, inp: MethodInputs) -> nn.Module:
    """The copy of the base a method modifies: the caller's `inp.work` (used once) or a new one."""
    work, inp.work = inp.work, None
    if work is None or work is base:
        work = copy.deepcopy(base)
    for p in work.parameters():
        p.requires_grad_(False)
    return work


def _tensor_bytes(params: list[nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _lora(base: nn.Module, tok, inp: MethodInputs, mask: NeuronMask | None) -> Unlearned:
    from aglora.lora import attach_lora, count_parameters, save_adapter
    cfg = inp.cfg
    lcfg = (dataclasses.replace(cfg.lora, masked=True, all_layers=False) if mask is not None
            else dataclasses.replace(cfg.lora, masked=False, all_layers=True))
    torch.manual_seed(cfg.train.seed)
    model = attach_lora(_fresh_copy(base, inp), mask, lcfg)
    c = inp.concept
    result = train(model, tok, c.forget, c.retain, cfg.train, c.refusals, c.alternatives,
                   log=inp.log)
    trainable, effective, _ = count_parameters(model)
    if inp.out_dir is not None:
        meta = {"concept": c.name, "masked": mask is not None,
                "mask": mask.summary() if mask is not None else None}
        nbytes = save_adapter(model, inp.out_dir / "adapter", meta)
    else:  # the adapter's tensors alone
        nbytes = _tensor_bytes([p for n, p in model.named_parameters() if "lora_" in n])
    return Unlearned(model, base, "adapter", result, trainable, effective, nbytes, mask)


def _full(base: nn.Module, tok, inp: MethodInputs, forget_objective: str,
          retain_objective: str) -> Unlearned:
    cfg = inp.cfg
    tcfg = dataclasses.replace(cfg.train, forget_objective=forget_objective,
                               retain_objective=retain_objective)
    torch.manual_seed(cfg.train.seed)
    model = _fresh_copy(base, inp)
    params = list(model.parameters())  # tied embeddings appear once
    c = inp.concept
    with unfrozen(model, params):
        result = train(model, tok, c.forget, c.retain, tcfg, c.refusals, c.alternatives,
                       log=inp.log, params=params, reference=base)
    n = sum(p.numel() for p in params)
    return Unlearned(model, base, "full", result, n, n, _tensor_bytes(params))


# ---- the methods -------------------------------------------------------------------------------
@register("ag_lora", "LoRA confined to the activation-guided neurons (ours)")
def ag_lora(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _lora(base, tok, inp, ag_mask(base, inp))


@register("plain_lora", "the same LoRA objective and rank on every layer's modules, no mask")
def plain_lora(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _lora(base, tok, inp, None)


@register("random_lora", "masked LoRA on as many neurons as ag_lora, chosen at random")
def random_lora(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _lora(base, tok, inp, random_mask(base, inp))


@register("full_gd", "full-parameter gradient difference: ascent on forget + NLL on retain")
def full_gd(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _full(base, tok, inp, "grad_ascent", "nll")


@register("full_npo", "full-parameter NPO with the run's retain term (train.retain_objective)")
def full_npo(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    return _full(base, tok, inp, "npo", inp.cfg.train.retain_objective)


@register("rmu", "representation misdirection on a few layers' MLP weights (WMDP)")
def rmu(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    model = _fresh_copy(base, inp)
    c = inp.concept
    result = train_rmu(model, base, tok, c.forget, c.retain, inp.cfg.train, inp.rmu, log=inp.log)
    params = rmu_parameters(model, inp.rmu)
    n = sum(p.numel() for p in params)
    return Unlearned(model, base, "full", result, n, n, _tensor_bytes(params))


@register("act_edit", "no training: the AG-selected neurons zeroed or clamped at inference",
          seeded=False)
def act_edit(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    mask = ag_mask(base, inp)
    model = _fresh_copy(base, inp)
    apply_edit(model, mask, inp.act_edit.mode, inp.retain_mean)
    if inp.out_dir is not None:
        save_mask(mask, inp.out_dir)
        nbytes = (inp.out_dir / "masks.safetensors").stat().st_size
    else:
        nbytes = mask.n_selected * 8  # (layer, neuron) as two int32
    return Unlearned(model, base, "edit", TrainResult(), 0, 0, nbytes, mask)


def apply_method(name: str, base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    """Run one registered method on `base` (left unchanged)."""
    return get_method(name).fn(base, tok, inp)
