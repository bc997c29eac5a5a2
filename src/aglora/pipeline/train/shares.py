"""Each process's share of a training step under `accelerate launch`, and FSDP for training.

Every process draws the same batch (the same seeded `Cycler`s), takes a contiguous share of its
forget items and of its retain items (sizes differing by at most one), and computes the
objective's terms on that share. A term is a mean over units: items (NPO, gradient ascent, the
retain NLL) or tokens (the retain KL: content tokens). So each process weights its term by its
share of the batch's units, u_share / u_batch, and the gradients are summed over the processes
(`reduce_grads`, one all-reduce of every LoRA gradient; under FSDP its reduce-scatter, set to
sum): N processes at batch B make the update one process makes at batch B, up to the order of
float additions. The logged losses are the same sums of the weighted terms.

That holds for the terms whose units are known (`term_units`: `AnswerObjective` with forget
objective npo | grad_ascent | none, forget_response suppress, no forget_others_kl, retain
objective kl | nll | none; the shipped run configs). Otherwise (a term that mixes units, such as
kl+nll or a refusal term over the chat rows, or another objective such as RMU) the shares are
weighted by items: close to, not equal to, the single-process update (a warning says so). A
process whose share would be empty (a batch smaller than the number of processes) computes its
term on the batch's first item with weight 0, so every process runs the same model calls, as
FSDP needs.

After the forget term every process takes the main process's random generator state, so the
batches stay the same on all processes even where the objective draws targets at random
(forget_response refuse | alternative; each process then draws for its own share from the same
state, which one process would not: another reason those runs are only close).

Decisions that steer the loop (the early-stopping checks, the known validation items) are the
main process's (`agreed`): under DDP it computes them and the others wait; under FSDP every
process computes them (the model's layers are spread over the processes) and uses the main's.

FSDP (`shard_layers`): each decoder layer becomes an FSDP2 unit (`fully_shard`); embeddings,
final norm and output layer stay whole on every process (they may be tied). The model is
called layer by layer in aglora's own forwards, and every unit call gathers its weights from all
processes, so every process must make the same calls: the shared-prefix pass, which depends on
a batch's rows, is off while training is sharded (`aglora.model.forward.prefix_sharing`), and
a forget_response other than suppress is refused (its term runs only where a share has rows
for it).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.errors import AgloraError
from aglora.model.tokens import encode
from aglora.pipeline.train.objectives import AnswerObjective
from aglora.runtime.processes import Ranks, agree, all_sum, broadcast, on_main

T = TypeVar("T")
_log = logging.getLogger("aglora")
ITEM_MEAN_FORGET = ("npo", "grad_ascent", "none")  # forget objectives: a mean over items


def share_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """[start, end) of process `rank`'s contiguous share of n items (sizes differ by <= 1)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class Units:
    """Per item, what each term averages over (an item's weight in the term's mean)."""
    forget: list[float]      # [n_forget]
    retain: list[float]      # [n_retain]
    retain_kl: list[float]   # [n_retain] the KL part of the retain term: content tokens
    exact: bool              # every term is a mean over one kind of unit
    why_not: str = ""


def content_tokens(tok, items: list[Probe]) -> list[float]:
    """Content positions per item (the KL term's positions; they do not depend on the batch)."""
    return [float(encode(tok, [p], [p.answer or ""]).content_mask.sum()) for p in items]


def term_units(objective, tok, forget: list[Probe], retain: list[Probe]) -> Units:
    """The units of `objective`'s terms (items unless known to be tokens)."""
    items_f, items_r = [1.0] * len(forget), [1.0] * len(retain)
    if not isinstance(objective, AnswerObjective):
        return Units(items_f, items_r, items_r, False,
                     f"objective {type(objective).__name__}: its units are not known")
    cfg = objective.cfg
    kl = content_tokens(tok, retain) if "kl" in cfg.retain_objective and retain else items_r
    retain_units = kl if cfg.retain_objective == "kl" else items_r
    why = []
    if cfg.forget_objective not in ITEM_MEAN_FORGET:
        why.append(f"forget_objective {cfg.forget_objective}")
    if getattr(cfg, "forget_response", "suppress") != "suppress":
        why.append(f"forget_response {cfg.forget_response} (a mean over the rows it trains)")
    if cfg.forget_others_kl > 0 and cfg.forget_objective != "none":
        why.append("forget_others_kl (a mean over answer tokens)")
    if cfg.retain_objective not in ("kl", "nll", "none"):
        why.append(f"retain_objective {cfg.retain_objective} (tokens and items)")
    return Units(items_f, retain_units, kl, not why, ", ".join(why))


@dataclass
class StepLosses:
    """This process's loss to differentiate and the step's totals over all processes."""
    loss: torch.Tensor          # this process's weighted terms (backward)
    total: float                # forget + retain_weight * retain, the whole batch's
    forget: float
    retain: float
    retain_kl: float | None
    forget_term: torch.Tensor | None = None    # the terms apart (one process; disruption mask)
    weighted_retain: torch.Tensor | None = None


class Shares:
    """This process's share of every training step (see the module docstring)."""

    def __init__(self, ranks: Ranks, objective, tok, forget: list[Probe], retain: list[Probe],
                 params: list[nn.Parameter], sharded: bool) -> None:
        self.ranks, self.objective, self.tok = ranks, objective, tok
        self.sharded = sharded
        response = getattr(getattr(objective, "cfg", None), "forget_response", "suppress")
        if sharded and response != "suppress":
            raise AgloraError(f"train.forget_response={response} does not train under FSDP (the "
                              "processes would make different model calls); use the "
                              "multi_gpu accelerate config, or forget_response suppress")
        self.units = term_units(objective, tok, forget, retain)
        if not self.units.exact:
            _log.warning(f"[aglora] warning: {self.units.why_not}: the {ranks.size} processes' "
                         "shares are weighted by items, so the update is close to, not equal "
                         "to, one process's")
        if not sharded:  # every process starts from the main's LoRA weights (as DDP does)
            with torch.no_grad():
                for p in params:
                    broadcast(p.data)

    def agreed(self, fn: Callable[[], T]) -> T:
        """The main process's `fn()` on every process (all compute it when sharded)."""
        return agree(fn()) if self.sharded else on_main(fn)

    def _mine(self, idx: list[int], units: list[float]) -> tuple[list[int], float]:
        """(my items of batch `idx`, my share of its units); an empty share is the first item at
        weight 0."""
        start, end = share_bounds(len(idx), self.ranks.size, self.ranks.rank)
        if start == end:
            return idx[:1], 0.0
        return idx[start:end], sum(units[i] for i in idx[start:end]) / sum(units[i] for i in idx)

    def losses(self, model: nn.Module, f_idx: list[int], next_retain: Callable[[], list[int]]
               | None, weight: torch.Tensor, rng: random.Random,
               device: torch.device) -> StepLosses:
        """This process's terms on its share of the step's batch, and the batch's totals.
        `weight` [n_forget]: every forget item's weight; `next_retain`: draws the retain batch
        (after the forget term, as in one process), None without a retain term."""
        mine, f_share = self._mine(f_idx, self.units.forget)
        forget_loss = self.objective.forget_loss(model, mine, weight[mine].to(device), rng)
        forget_part = forget_loss * f_share
        rng.setstate(agree(rng.getstate()))  # the same next batches everywhere
        retain_part = torch.zeros((), device=device)
        kl_part, kl_missing = 0.0, 0.0
        if next_retain is not None:
            r_idx = next_retain()
            mine, r_share = self._mine(r_idx, self.units.retain)
            _, kl_share = self._mine(r_idx, self.units.retain_kl)
            retain_loss, kl_value = self.objective.retain_loss(model, mine, device)
            retain_part = retain_loss * r_share
            kl_missing = 1.0 if kl_value is None else 0.0
            kl_part = (kl_value or 0.0) * kl_share
        loss = forget_part + self.objective.retain_weight * retain_part
        sums = all_sum(torch.tensor([float(loss.detach()), float(forget_part.detach()),
                                     float(retain_part.detach()), kl_part, kl_missing],
                                    dtype=torch.float64, device=device)).tolist()
        return StepLosses(loss, sums[0], sums[1], sums[2], None if sums[4] else sums[3])

    def reduce_grads(self, params: list[nn.Parameter]) -> None:
        """Sum every parameter's gradient over the processes (one flat all-reduce); a gradient
        no process has stays None. FSDP reduces its own, in its backward."""
        if self.sharded or not params:
            return
        device = params[0].device
        flat = torch.cat([torch.tensor([0.0 if p.grad is None else 1.0 for p in params],
                                       device=device)]
                         + [(p.grad if p.grad is not None else torch.zeros_like(p))
                            .detach().float().flatten() for p in params])
        all_sum(flat)
        present, grads = flat[:len(params)], flat[len(params):]
        offset = 0
        for p, seen in zip(params, present.tolist(), strict=True):
            n = p.numel()
            if seen:
                p.grad = grads[offset: offset + n].view_as(p).to(p.dtype).clone()
            offset += n


def shard_layers(model: nn.Module) -> None:
    """FSDP2 on each decoder layer of `model` (in place): its weights, LoRA factors included,
    spread over the processes, gathered for each call and resharded after; gradients summed."""
    from torch.distributed.fsdp import fully_shard

    from aglora.model.forward import causal_lm
    for layer in causal_lm(model).get_decoder().layers:
        fully_shard(layer, reshard_after_forward=True)
        layer.set_gradient_divide_factor(1.0)  # sums, like `reduce_grads` ...
        layer.set_force_sum_reduction_for_comms(True)  # ... as a plain SUM (gloo has no other)


def full_lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter of a sharded `model`, whole, on the CPU (all processes call
    this together: each gathers every shard)."""
    from torch.distributed.tensor import DTensor
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            whole = p.full_tensor() if isinstance(p, DTensor) else p
            out[name] = whole.detach().cpu()
    return out


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `full_lora_state`'s tensors into the same parameters of an unsharded `model`."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in state.items():
            params[name].copy_(t)
