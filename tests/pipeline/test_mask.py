"""Mask selection (aglora.pipeline.mask) follows the scores, not the neuron index."""

from __future__ import annotations

import torch

from aglora.config import MaskConfig
from aglora.pipeline.mask import select


def test_topk_selects_by_score_not_by_index():
    score = torch.tensor([[0.1, 0.9, 0.2, 0.8],
                          [0.95, 0.0, 0.3, 0.05]])
    mask = select(score, MaskConfig(selection="topk_global", k=3))
    assert torch.equal(mask, torch.tensor([[0.0, 1, 0, 1], [1, 0, 0, 0]]))
    per_layer = select(score, MaskConfig(selection="topk_per_layer", k=1))
    assert torch.equal(per_layer, torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    frac = select(score, MaskConfig(selection="fraction", fraction=0.25))
    assert torch.equal(frac, torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    # Reversed index order gives the mirrored mask: selection follows values, not positions.
    flipped = select(score.flip(1), MaskConfig(selection="topk_global", k=3))
    assert torch.equal(flipped, mask.flip(1))
