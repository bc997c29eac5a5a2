"""Neuron masks: selection by score, save/load, summaries for the report.

A mask is a 0/1 matrix [n_layers, d_ff] in the index space of the MLP neurons (the inputs of
`down_proj`, equally the outputs of `gate_proj`/`up_proj`). Selection always goes by *score*
(`torch.topk` over the score values), never by index order.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aglora.config import MaskConfig
from aglora.errors import AgloraError
from aglora.model.neurons import NeuronMask
from aglora.runtime.artifacts import load_tensors, save_tensors, write_json


def select(score: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """0/1 mask of the highest-scoring neurons. score [n_layers, d_ff] -> [n_layers, d_ff]."""
    mask = torch.zeros_like(score, dtype=torch.float32)
    if cfg.selection == "topk_per_layer":
        if cfg.k > score.shape[1]:  # refused, not capped: the run would not be what it says
            raise AgloraError(f"mask.k={cfg.k} exceeds the {score.shape[1]} neurons of a layer "
                              "(selection topk_per_layer); lower mask.k")
        k = cfg.k
        idx = torch.topk(score, k, dim=1).indices  # [n_layers, k]
        mask.scatter_(1, idx, 1.0)
        return mask
    k = cfg.k if cfg.selection == "topk_global" else max(1, round(cfg.fraction * score.numel()))
    if k > score.numel():
        raise AgloraError(f"mask.k={k} exceeds the model's {score.numel()} MLP neurons "
                          f"({score.shape[0]} layers); lower mask.k")
    idx = torch.topk(score.flatten(), k).indices
    mask.view(-1)[idx] = 1.0
    return mask


def save_mask(mask: NeuronMask, run_dir: Path) -> None:
    save_tensors(run_dir / "masks.safetensors", {"mask": mask.mask,
                                                 "layer_indices": torch.tensor(mask.layer_indices)})
    write_json(run_dir / "masks.json", mask.summary())


def load_mask(path: Path) -> NeuronMask:
    t = load_tensors(path)
    return NeuronMask(t["mask"].float(), t["layer_indices"].tolist())
