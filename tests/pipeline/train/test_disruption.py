"""Disruption masking (aglora.pipeline.train.disruption): hand-computed masks, the momentum
average, and a masked adapter staying confined to its neurons."""

from __future__ import annotations

import pytest
import torch

from aglora.config import LoraConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.pipeline.train.disruption import DisruptionMask
from tests.tiny import LORA_FORGET, LORA_RETAIN, assert_down_proj_confined, make_model, sparse_mask


def _losses(w: torch.Tensor, f: list[float], r: list[float]):
    """Linear losses whose gradients are exactly f and r."""
    return (w * torch.tensor(f)).sum(), (w * torch.tensor(r)).sum()


def test_forget_gradient_kept_only_where_signs_agree():
    w = torch.nn.Parameter(torch.zeros(4))
    dm = DisruptionMask([w], momentum=0.0)
    dm.backward(*_losses(w, [1.0, -2.0, 3.0, 0.0], [0.5, 1.0, -1.0, 0.0]))
    # entry 0: both +, kept; 1: disagree, dropped; 2: disagree, dropped; 3: both 0, kept (0)
    assert w.grad.tolist() == [1.5, 1.0, -1.0, 0.0]
    assert dm.kept_share == 0.5


def test_the_mask_compares_with_the_retain_gradients_moving_average():
    w = torch.nn.Parameter(torch.zeros(2))
    dm = DisruptionMask([w], momentum=0.5)
    dm.backward(*_losses(w, [1.0, 1.0], [1.0, 1.0]))        # m = [1, 1]
    dm.backward(*_losses(w, [1.0, 1.0], [-0.5, -3.0]))      # m = [0.25, -1]
    assert dm.accumulated[0].tolist() == [0.25, -1.0]
    assert w.grad.tolist() == [1.0 - 0.5, -3.0]             # entry 1's forget part dropped


def _train(disruption: bool):
    from aglora.model.adapter import attach_lora, trainable_parameters
    from aglora.pipeline.train.loop import train
    from tests.tiny import make_tokenizer
    tok = make_tokenizer()
    pm = attach_lora(make_model(seed=3), sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))
    cfg = TrainConfig(lr=5e-2, max_steps=5, min_steps=5, batch_size=1, check_every=10**6,
                      disruption_mask=disruption, disruption_momentum=0.0)
    result = train(pm, tok, LORA_FORGET, LORA_RETAIN, cfg, log=lambda *_: None)
    return pm, trainable_parameters(pm), result


@pytest.mark.slow
def test_a_masked_adapter_stays_confined_with_the_disruption_mask():
    """The neuron mask is a parametrization: entries outside the selected columns get no
    gradient from either term, so the folded update touches only the selected neurons."""
    pm, _, result = _train(True)
    assert all(0.0 <= row["forget_entries_kept"] <= 1.0 for row in result.history)
    assert_down_proj_confined(pm, sparse_mask())


@pytest.mark.slow
def test_disruption_mask_changes_the_update_and_needs_a_retain_term():
    _, with_mask, _ = _train(True)
    _, without, _ = _train(False)
    assert any(not torch.equal(a, b) for a, b in zip(with_mask, without, strict=True))
    from aglora.model.adapter import attach_lora
    from aglora.pipeline.train.loop import train
    from tests.tiny import make_tokenizer
    pm = attach_lora(make_model(seed=3), sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))
    with pytest.raises(AgloraError, match="disruption_mask needs a retain term"):
        train(pm, make_tokenizer(), LORA_FORGET, [], TrainConfig(disruption_mask=True),
              log=lambda *_: None)
