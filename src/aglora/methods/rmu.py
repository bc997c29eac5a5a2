"""RMU, representation misdirection (Li et al. 2024, WMDP), on a few layers' MLP.

At one decoder layer l the residual-stream output h_l ([batch, seq, d_model]) is pushed, on the
forget items' content tokens, toward a fixed random direction u scaled to `steering` times the
base model's mean activation norm there (WMDP fixes the scale by hand per model; a relative
scale carries over between models). On retain items h_l is held at the frozen base model's:

    loss = mean ||h_l(x_f) - c u||^2 / d  +  alpha * mean ||h_l(x_r) - h_l^base(x_r)||^2 / d

Only the MLP weights named in `modules` of layers l-n+1..l train (WMDP: down_proj of layers
5, 6, 7 with l = 7 in a 32-layer model). The forward pass stops at layer l, so a step costs a
fraction of a full pass. `RmuObjective` supplies this loss to the one training loop, so batching,
the step budget and early stopping are those of every other method.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.errors import AgloraError
from aglora.methods.base import MethodInputs, Unlearned, fresh_copy, tensor_bytes
from aglora.methods.settings import RmuConfig
from aglora.model.forward import causal_lm
from aglora.model.neurons import mlp_layers
from aglora.model.tokens import Batch, encode
from aglora.pipeline.train.loop import train, unfrozen


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass after the steered layer."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    lm = causal_lm(model)
    return lm.get_decoder().layers


def steered_layer(model: nn.Module, rcfg: RmuConfig) -> int:
    n = len(decoder_layers(model))
    li = int(rcfg.layer) if rcfg.layer >= 1 else round(rcfg.layer * (n - 1))
    if not 0 <= li < n:
        raise AgloraError(f"rmu.layer={rcfg.layer}: the model has {n} layers")
    return li


def hidden_at(model: nn.Module, batch: Batch, layer: int) -> torch.Tensor:
    """Output of decoder layer `layer` -> [batch, seq, d_model]; later layers do not run."""
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: tuple, out) -> None:
        store.append(out[0] if isinstance(out, tuple) else out)
        raise _Stop

    lm = causal_lm(model)
    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        lm.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    return store[0]


def rmu_parameters(model: nn.Module, rcfg: RmuConfig) -> list[nn.Parameter]:
    """The trained weights: `modules` of the MLPs of the n_layers layers ending at the layer."""
    li = steered_layer(model, rcfg)
    chosen = range(max(0, li - rcfg.n_layers + 1), li + 1)
    by_index = {layer.index: layer for layer in mlp_layers(model)}
    return [getattr(by_index[i].module, m).weight for i in chosen for m in rcfg.modules]


class RmuObjective:
    """RMU's loss for the one training loop (see the module docstring).

    `base` is the frozen model the retain term holds the trained copy to, and whose mean
    activation norm on the forget tokens sets the steering target's scale.
    """

    uses_retain = True

    def __init__(self, model: nn.Module, base: nn.Module, tok, forget: list[Probe],
                 retain: list[Probe], cfg: TrainConfig, rcfg: RmuConfig) -> None:
        if not forget or not retain:
            raise AgloraError("RMU needs forget and retain items")
        self.base, self.tok, self.forget, self.retain = base, tok, forget, retain
        self.layer = steered_layer(model, rcfg)
        self.retain_weight = rcfg.alpha
        device = next(model.parameters()).device
        d_model = decoder_layers(model)[self.layer].input_layernorm.weight.numel()
        gen = torch.Generator().manual_seed(rcfg.seed + cfg.seed)
        u = torch.rand(d_model, generator=gen)  # WMDP: uniform [0, 1), normalised
        u = (u / u.norm()).to(device)
        with torch.no_grad():  # the scale: mean norm of the base activations on forget tokens
            norms = []
            for s in range(0, len(forget), cfg.batch_size):
                b = self._encode(forget[s: s + cfg.batch_size], device)
                h = hidden_at(base, b, self.layer)[b.content_mask.bool()]  # [n_tok, d_model]
                norms.append(h.float().norm(dim=-1))
            self.target = rcfg.steering * float(torch.cat(norms).mean()) * u  # [d_model]

    def _encode(self, items: list[Probe], device: torch.device) -> Batch:
        return encode(self.tok, items, [p.answer or "" for p in items]).to(device)

    def forget_loss(self, model: nn.Module, f_idx: list[int], weight: torch.Tensor,
                    rng: random.Random) -> torch.Tensor:
        fb = self._encode([self.forget[i] for i in f_idx], weight.device)
        h_f = hidden_at(model, fb, self.layer)[fb.content_mask.bool()]  # [n_tokens, d_model]
        return F.mse_loss(h_f.float(), self.target.expand_as(h_f).float())

    def retain_loss(self, model: nn.Module, r_idx: list[int],
                    device: torch.device) -> tuple[torch.Tensor, float | None]:
        rb = self._encode([self.retain[i] for i in r_idx], device)
        sel = rb.content_mask.bool()
        h_r = hidden_at(model, rb, self.layer)[sel]  # [n_tokens, d_model]
        with torch.no_grad():
            h_r0 = hidden_at(self.base, rb, self.layer)[sel]
        return F.mse_loss(h_r.float(), h_r0.float()), None


def rmu(base: nn.Module, tok, inp: MethodInputs) -> Unlearned:
    """Train the RMU weights of a copy of `base` on the one training loop."""
    model = fresh_copy(base, inp)
    c, cfg = inp.concept, inp.cfg.train
    objective = RmuObjective(model, base, tok, c.forget, c.retain, cfg, inp.rmu)
    params = rmu_parameters(model, inp.rmu)
    with unfrozen(model, params):
        result = train(model, tok, c.forget, c.retain, cfg, log=inp.log, params=params,
                       objective=objective)
    n = sum(p.numel() for p in params)
    return Unlearned(model, base, "full", result, n, n, tensor_bytes(params))
