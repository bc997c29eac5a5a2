"""Sharpness-aware forgetting (aglora.pipeline.train.sharpness): a hand-computed gradient at the
perturbed weights, the weights restored exactly, and a masked adapter staying confined."""

from __future__ import annotations

import math

import pytest
import torch

from aglora.config import LoraConfig, TrainConfig
from aglora.errors import AgloraError
from aglora.pipeline.train.sharpness import SharpnessAware
from tests.tiny import LORA_FORGET, LORA_RETAIN, assert_down_proj_confined, make_model, sparse_mask


def test_the_forget_gradient_is_taken_at_the_worst_nearby_weights():
    """f(w) = ||w||^2 / 2 at w0 = [3, 4, 0, 0]: g_f = w0 (norm 5, 2 entries reached), so
    rho = r * lr * sqrt(2), the weights move to w0 (1 + rho / 5), where grad f is that point;
    the retain term is linear with gradient [0, 0, 1, -1]."""
    w0 = torch.tensor([3.0, 4.0, 0.0, 0.0])
    w = torch.nn.Parameter(w0.clone())
    retain_grad = torch.tensor([0.0, 0.0, 1.0, -1.0])
    sam = SharpnessAware([w], radius=1.0, lr=0.5)

    def forget() -> torch.Tensor:
        return 0.5 * (w * w).sum()

    sam.backward(forget(), (w * retain_grad).sum(), forget)
    rho = 0.5 * math.sqrt(2)
    assert sam.rho == pytest.approx(rho, abs=1e-12)
    scale = 1 + rho / 5
    torch.testing.assert_close(w.grad, torch.tensor([3 * scale, 4 * scale, 1.0, -1.0]))
    assert sam.rise == pytest.approx(12.5 * (scale ** 2 - 1), rel=1e-5)
    assert torch.equal(w.detach(), w0)  # restored bit for bit


def test_a_zero_forget_gradient_leaves_the_retain_gradient():
    w = torch.nn.Parameter(torch.ones(3))
    sam = SharpnessAware([w], radius=2.0, lr=0.1)
    sam.backward((w * 0).sum(), (w * torch.tensor([1.0, 2.0, 3.0])).sum(),
                 lambda: pytest.fail("no perturbation without a forget gradient"))
    assert w.grad.tolist() == [1.0, 2.0, 3.0] and sam.rho == 0.0


def _train(radius: float):
    from aglora.model.adapter import attach_lora, trainable_parameters
    from aglora.pipeline.train.loop import train
    from tests.tiny import make_tokenizer
    pm = attach_lora(make_model(seed=3), sparse_mask(), LoraConfig(modules=["down_proj"], rank=4))
    cfg = TrainConfig(lr=5e-2, max_steps=5, min_steps=5, batch_size=1, check_every=10**6,
                      sharpness_radius=radius)
    result = train(pm, make_tokenizer(), LORA_FORGET, LORA_RETAIN, cfg, log=lambda *_: None)
    return pm, [p.detach().clone() for p in trainable_parameters(pm)], result


@pytest.mark.slow
def test_a_masked_adapter_stays_confined_with_sharpness_aware_forgetting():
    pm, with_sam, result = _train(1.0)
    assert all(row["sharpness_rho"] > 0 for row in result.history)
    assert_down_proj_confined(pm, sparse_mask())
    _, without, plain = _train(0.0)
    assert any(not torch.equal(a, b) for a, b in zip(with_sam, without, strict=True))
    assert "sharpness_rho" not in plain.history[0]


def test_sharpness_settings_are_checked():
    with pytest.raises(AgloraError, match="sharpness_radius"):
        TrainConfig(sharpness_radius=-1.0)
    with pytest.raises(AgloraError, match="turn one off"):
        TrainConfig(sharpness_radius=1.0, disruption_mask=True)
