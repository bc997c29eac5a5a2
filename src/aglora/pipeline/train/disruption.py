"""Disruption masking: the forget term moves a weight entry only where the retain term agrees.

MUDMAN (Sondej et al. 2025, "Robust LLM unlearning with MUDMAN: meta-unlearning with disruption
masking and normalization") updates a parameter entry from the unlearning gradient only where its
sign equals the sign of an accumulated retain gradient: the step then lowers the forget loss
without raising the retain loss to first order, entry by entry, which its authors report makes
the unlearning harder to undo by fine-tuning. Whether it does so here is a measurement
(docs/results/), not an assumption.

With `train.disruption_mask` the training loop differentiates the two terms separately and sets
every trainable parameter's gradient to

    g = g_forget * [sign(g_forget) == sign(m)] + g_retain,      m <- mu * m + (1 - mu) * g_retain

where `g_retain` is the gradient of `retain_weight * retain term` and `m` its exponential moving
average (momentum `mu`, MUDMAN's retain accumulator; `mu = 0` uses this step's retain gradient
alone). Entries where either sign is zero are kept only when both are zero. The optimiser (AdamW)
then steps on `g` as usual; the neuron mask still applies (it is a parametrization of the LoRA
weight, so masked-out entries get no gradient from either term). MUDMAN's other parts (an
adversary relearned on the forget set, gradient normalisation) are not included.
"""

from __future__ import annotations

import torch
from torch import nn


class DisruptionMask:
    """Sets each parameter's gradient from a forget and a retain loss (module docstring)."""

    def __init__(self, params: list[nn.Parameter], momentum: float = 0.9) -> None:
        self.params, self.momentum = params, momentum
        self.accumulated: list[torch.Tensor] | None = None
        self.kept_share = float("nan")  # share of forget-gradient entries kept at the last step

    def backward(self, forget_loss: torch.Tensor, weighted_retain: torch.Tensor) -> None:
        """Write the masked gradient into `p.grad` for every parameter."""
        g_f = gradients(forget_loss, self.params)
        g_r = gradients(weighted_retain, self.params)
        if self.accumulated is None:
            self.accumulated = [g.clone() for g in g_r]
        else:
            mu = self.momentum
            self.accumulated = [mu * m + (1 - mu) * g for m, g in zip(
                self.accumulated, g_r, strict=True)]
        kept, total = 0, 0
        for p, gf, gr, m in zip(self.params, g_f, g_r, self.accumulated, strict=True):
            agree = torch.sign(gf) == torch.sign(m)  # [same shape as p]
            p.grad = gf * agree + gr
            kept += int(agree.sum())
            total += agree.numel()
        self.kept_share = kept / total if total else float("nan")


def gradients(loss: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d p for every parameter (zeros where the loss does not depend on it)."""
    if not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
