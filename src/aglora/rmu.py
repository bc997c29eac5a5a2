"""RMU, representation misdirection (Li et al. 2024, WMDP), on a few layers' MLP.

At one decoder layer l the residual-stream output h_l ([batch, seq, d_model]) is pushed, on the
forget items' content tokens, toward a fixed random direction u scaled to `steering` times the
base model's mean activation norm there (WMDP fixes the scale by hand per model; a relative
scale carries over between models). On retain items h_l is held at the frozen base model's:

    loss = mean ||h_l(x_f) - c u||^2 / d  +  alpha * mean ||h_l(x_r) - h_l^base(x_r)||^2 / d

Only the MLP weights named in `modules` of layers l-n+1..l train (WMDP: down_proj of layers
5, 6, 7 with l = 7 in a 32-layer model). The forward pass stops at layer l, so a step costs a
fraction of a full pass. Batching, the step budget and early stopping (forget items at chance on
likelihood choice) are those of the main training loop.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aglora.concepts import Probe
from aglora.config import MLP_MODULES, TrainConfig, _f
from aglora.errors import AgloraError
from aglora.models import mlp_layers
from aglora.text import Batch, encode
from aglora.train import TrainResult, _Cycler, forget_goal_met


@dataclass
class RmuConfig:
    layer: float = _f(0.25, "the layer whose output is steered: an index (>= 1) or a share of "
                            "the depth (< 1; WMDP used layer 7 of 32)")
    n_layers: int = _f(3, "layers trained, ending at `layer`")
    modules: list[str] = _f(["down_proj"], "MLP weights trained in those layers")
    steering: float = _f(4.0, "target norm, in units of the base model's mean activation norm "
                              "at the layer on the forget tokens")
    alpha: float = _f(100.0, "weight of the retain term")
    seed: int = _f(0, "seed of the random direction (the run's train.seed is added)")

    def __post_init__(self) -> None:
        bad = [m for m in self.modules if m not in MLP_MODULES]
        if bad or not self.modules:
            raise AgloraError(f"rmu.modules={self.modules}: choose from {list(MLP_MODULES)}")
        if self.n_layers < 1:
            raise AgloraError(f"rmu.n_layers={self.n_layers}: must be at least 1")


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass after the steered layer."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
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

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
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


def train_rmu(model: nn.Module, base: nn.Module, tok, forget: list[Probe], retain: list[Probe],
              cfg: TrainConfig, rcfg: RmuConfig, log=print) -> TrainResult:
    """Train the RMU weights of `model` (a copy of `base`) in place; `base` stays frozen."""
    if not forget or not retain:
        raise AgloraError("RMU needs forget and retain items")
    li = steered_layer(model, rcfg)
    params = rmu_parameters(model, rcfg)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    d_model = decoder_layers(model)[li].input_layernorm.weight.numel()
    gen = torch.Generator().manual_seed(rcfg.seed + cfg.seed)
    u = torch.rand(d_model, generator=gen)  # WMDP: uniform [0, 1), normalised
    u = (u / u.norm()).to(device)

    def encode_items(items: list[Probe]) -> Batch:
        return encode(tok, items, [p.answer or "" for p in items]).to(device)

    with torch.no_grad():  # the scale: mean norm of the base activations on forget tokens
        norms = []
        for s in range(0, len(forget), cfg.batch_size):
            b = encode_items(forget[s: s + cfg.batch_size])
            norms.append(hidden_at(base, b, li)[b.content_mask.bool()].float().norm(dim=-1))
        target = rcfg.steering * float(torch.cat(norms).mean()) * u  # [d_model]

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    choice_items = [p for p in forget if p.has_choice]
    chance = (sum(1 / (1 + len(p.distractors)) for p in choice_items) / len(choice_items)
              if choice_items else 0.0)
    f_cycle = _Cycler(len(forget), cfg.batch_size, rng)
    r_cycle = _Cycler(len(retain), cfg.batch_size, rng)
    result = TrainResult()
    start = time.time()
    model.train()
    for step in range(1, cfg.max_steps + 1):
        fb = encode_items([forget[i] for i in f_cycle.next()])
        h_f = hidden_at(model, fb, li)[fb.content_mask.bool()]  # [n_tokens, d_model]
        forget_loss = F.mse_loss(h_f.float(), target.expand_as(h_f).float())
        rb = encode_items([retain[i] for i in r_cycle.next()])
        sel = rb.content_mask.bool()
        h_r = hidden_at(model, rb, li)[sel]
        with torch.no_grad():
            h_r0 = hidden_at(base, rb, li)[sel]
        retain_loss = F.mse_loss(h_r.float(), h_r0.float())
        loss = forget_loss + rcfg.alpha * retain_loss
        if not math.isfinite(float(loss.detach())):
            raise AgloraError(f"RMU diverged at step {step}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row = {"step": step, "loss": float(loss.detach()),
               "forget_loss": float(forget_loss.detach()),
               "retain_loss": float(retain_loss.detach()), "seconds": time.time() - start}
        if choice_items and step % cfg.check_every == 0:
            model.eval()
            check = forget_goal_met(model, tok, choice_items, cfg, chance)
            model.train()
            row.update(train_forget_accuracy=check.accuracy, train_forget_margin=check.margin)
            result.stopped_early = check.met and step >= cfg.min_steps
        result.history.append(row)
        log(f"[aglora] rmu step {step:3d} forget {row['forget_loss']:.3f} "
            f"retain {row['retain_loss']:.5f}"
            + (f" acc {row['train_forget_accuracy']:.2f}" if "train_forget_accuracy" in row
               else ""))
        result.steps = step
        if result.stopped_early:
            break
    model.eval()
    for p in params:
        p.requires_grad_(False)
    result.seconds = time.time() - start
    return result
