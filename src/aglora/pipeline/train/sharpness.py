"""Sharpness-aware forgetting: the forget gradient is taken at the worst nearby weights.

Fan et al. 2025 ("Towards LLM unlearning resilient to relearning attacks: a sharpness-aware
minimization perspective and beyond", ICML) link resistance to relearning with a flat forget
loss: relearning is a few gradient steps away from the unlearned weights, so an unlearned model
whose forget loss stays low in a whole neighbourhood is harder to bring back. Their NPO+SAM
minimises `max_{||d|| <= rho} L_forget(w + d) + L_retain(w)` with one SAM ascent step:

    d = rho * g_f / ||g_f||,     g = grad L_forget(w + d) + grad (retain_weight * L_retain)(w)

where g_f = grad L_forget(w) over all trainable entries. With `train.sharpness_radius` = r the
training loop sets every trainable parameter's gradient to this g (AdamW then steps on it). The
radius is relative, not absolute, because a LoRA update's scale depends on the run: rho =
r * lr * sqrt(n), the norm of one AdamW step at the run's learning rate when each of the n
entries the forget gradient reaches moves by lr (early AdamW steps move entries by about lr).
r = 1 probes one step away. The neuron mask is a parametrization of the LoRA weight, so the
entries it zeroes get no gradient: the perturbation, and so the update, stays on the selected
neurons. The weights are restored bit for bit (a saved copy, not a subtraction). Off (r = 0),
the loop runs exactly as without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from aglora.pipeline.train.disruption import gradients


class SharpnessAware:
    """Sets each parameter's gradient to the forget gradient at the worst nearby weights plus
    the retain gradient (module docstring)."""

    def __init__(self, params: list[nn.Parameter], radius: float, lr: float) -> None:
        self.params, self.radius, self.lr = params, radius, lr
        self.rho = 0.0           # the perturbation's norm at the last step
        self.rise = float("nan")  # L_forget(w + d) - L_forget(w) at the last step

    def backward(self, forget_loss: torch.Tensor, weighted_retain: torch.Tensor,
                 forget_again: Callable[[], torch.Tensor]) -> None:
        """Write the gradient into `p.grad`; `forget_again()` recomputes the forget loss on the
        same batch at the current weights (it is called with the weights perturbed)."""
        g_f = gradients(forget_loss, self.params)
        g_r = gradients(weighted_retain, self.params)
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in g_f))
        reached = sum(int(torch.count_nonzero(g)) for g in g_f)
        if norm == 0.0:
            self.rho, self.rise = 0.0, 0.0
            for p, gf, gr in zip(self.params, g_f, g_r, strict=True):
                p.grad = gf + gr
            return
        self.rho = self.radius * self.lr * math.sqrt(reached)
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, g in zip(self.params, g_f, strict=True):
                p.add_(g, alpha=self.rho / norm)
        try:
            perturbed = forget_again()
            g_p = gradients(perturbed, self.params)
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, saved, strict=True):
                    p.copy_(w)
        self.rise = float(perturbed.detach()) - float(forget_loss.detach())
        for p, gp, gr in zip(self.params, g_p, g_r, strict=True):
            p.grad = gp + gr
