"""Inputs for the method tests: a tiny run config, planted scores, and state diffs."""

from __future__ import annotations

import torch

from aglora.concepts import load_concept
from aglora.config import RunConfig, TrainConfig
from aglora.methods.base import MethodInputs
from aglora.methods.rmu import RmuConfig

N_LAYERS, D_FF = 3, 48


def method_inputs(concept_path, k: int = 5, steps: int = 3, **train) -> MethodInputs:
    cfg = RunConfig()
    cfg.mask.k = k
    cfg.lora.rank = 4
    cfg.train = TrainConfig(max_steps=steps, min_steps=steps, lr=1e-2, batch_size=2,
                            check_every=10**6, **train)
    scores = torch.arange(N_LAYERS * D_FF, dtype=torch.float32).reshape(N_LAYERS, D_FF)
    scores[1] = 0.0  # top-k lands in layer 2 (and 0 only if k > 48)
    return MethodInputs(cfg=cfg, concept=load_concept(concept_path), scores=scores,
                        retain_mean=torch.full((N_LAYERS, D_FF), 0.5),
                        rmu=RmuConfig(layer=2, n_layers=2), log=lambda *_: None)


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed_keys(before: dict, after_model) -> set[str]:
    after = after_model.state_dict()
    return {k for k, v in before.items() if not torch.equal(after[k], v)}
