"""What every unlearning method receives and returns, and the helpers the methods share.

A method is a function `(base, tok, MethodInputs) -> Unlearned`. It never modifies the base model
it is given: it works on its own deep copy (`fresh_copy`), so the base side of an evaluation can
be computed once and reused, and the base serves as the frozen reference of NPO, KL and RMU.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aglora.concepts import ConceptSpec
from aglora.config import RunConfig
from aglora.methods.settings import ActEditConfig, RmuConfig
from aglora.model.neurons import NeuronMask
from aglora.pipeline.train.loop import TrainResult


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
    log: Callable[[str], None] = logging.getLogger("aglora").info


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


def fresh_copy(base: nn.Module, inp: MethodInputs) -> nn.Module:
    """The copy of the base a method modifies: the caller's `inp.work` (used once) or a new one."""
    work, inp.work = inp.work, None
    if work is None or work is base:
        work = copy.deepcopy(base)
    for p in work.parameters():
        p.requires_grad_(False)
    return work


def tensor_bytes(params: list[nn.Parameter]) -> int:
    """Bytes the tensors of `params` take (what a full-parameter method ships)."""
    return sum(p.numel() * p.element_size() for p in params)
