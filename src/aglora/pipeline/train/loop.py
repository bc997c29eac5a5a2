"""The one training loop: seeded batches, one optimiser step each, early stopping.

Each step draws a forget batch (`batch_size` items, or with `train.batch_by_context` whole
contexts with every item on each, `batch_size` items per answer: `ContextCycler`) and (when
the objective uses one) a retain batch from seeded shuffles (with `train.pair_shared_answers`,
one more retain item for each forget item of the step whose answer a retain item shares:
`RetainDraw`), asks the objective for `forget + retain_weight * retain`, and steps AdamW on
the given parameters (default: the LoRA parameters of a peft model). The objective is
`objectives.AnswerObjective` built from the run config unless a method passes its own (RMU).

Every `check_every` steps the forget items are scored by likelihood choice (`stopping`; a
fixed subset per answer, only the lagging answers, where the settings ask for it); the run stops
once they are at the goal (chance, or `stop_accuracy`; mean margin <= `stop_margin`) after
`min_steps` (under `forget_response refuse`, only once enough greedy answers to the checked
chat items are refusals too: `stopping.refusal_share`). `max_steps` is a hard cap. The seconds
spent in checks and in steps are kept apart (`TrainResult.check_seconds`, each row's
`check_seconds`), so the checks' share of training time can be reported. Full-parameter
methods pass their own `params` and the untouched base as `reference`.

With `train.disruption_mask` the forget and retain terms are differentiated apart and the
forget gradient is kept only where its sign agrees with the retain gradient's (`disruption`);
with `train.sharpness_radius` the forget gradient is taken at the worst weights within that
radius (`sharpness`, a second forget pass on the same batch).

Under `accelerate launch` (more than one process) each process computes the terms on its share
of every batch and the gradients are summed over the processes, so the update is one process's
at the same batch size; the early-stopping decisions are the main process's (`shares`). One
process runs exactly the code it always ran.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.errors import AgloraError
from aglora.model.adapter import trainable_parameters
from aglora.model.forward import frozen_lower_layers
from aglora.model.likelihood import choice_summary, score_options
from aglora.pipeline.train.disruption import DisruptionMask
from aglora.pipeline.train.objectives import AnswerObjective
from aglora.pipeline.train.shares import Shares, StepLosses
from aglora.pipeline.train.sharpness import SharpnessAware
from aglora.pipeline.train.stopping import GoalChecker, refusal_share
from aglora.runtime.processes import ranks

_log = logging.getLogger("aglora")
T = TypeVar("T")


class Objective(Protocol):
    """What the loop needs of a loss: a forget term, a retain term and the weight between."""

    uses_retain: bool
    retain_weight: float

    def forget_loss(self, model: nn.Module, f_idx: list[int], weight: torch.Tensor,
                    rng: random.Random) -> torch.Tensor: ...

    def retain_loss(self, model: nn.Module, r_idx: list[int],
                    device: torch.device) -> tuple[torch.Tensor, float | None]: ...


@dataclass
class TrainResult:
    steps: int = 0
    stopped_early: bool = False
    stop_reason: str = "max_steps"
    seconds: float = 0.0
    check_seconds: float = 0.0   # of `seconds`: early-stopping checks (the final full one too)
    final_check: dict | None = None  # `GoalChecker.full` after the last step, when asked for
    history: list[dict] = field(default_factory=list)

    @property
    def step_seconds(self) -> float:
        """Seconds of training outside the checks."""
        return self.seconds - self.check_seconds


class Cycler:
    """Endless seeded shuffled batches of indices (0..n-1, or the subset set by `restrict`)."""

    def __init__(self, n: int, batch: int, rng: random.Random) -> None:
        self.ids, self.batch, self.rng, self.pool = list(range(n)), batch, rng, []

    def restrict(self, ids: list[int]) -> None:
        """Draw only from `ids` from now on (the current round keeps its order)."""
        self.ids = list(ids)
        keep = set(ids)
        self.pool = [i for i in self.pool if i in keep]

    def next(self) -> list[int]:
        out: list[int] = []
        while len(out) < min(self.batch, len(self.ids)):
            if not self.pool:
                self.pool = list(self.ids)
                self.rng.shuffle(self.pool)
            out.append(self.pool.pop())
        return out


class ContextCycler:
    """Endless seeded shuffled batches of whole contexts (format, prompt, prefix), each with
    every item on it (all items, or those set by `restrict`): contexts are drawn in a shuffled
    round until the batch holds `batch` items per distinct answer among the items drawn from,
    so that each answer gets about `batch` items a step however the items share contexts (a
    ban's list prompts hold one item per title, its description prompts one item)."""

    def __init__(self, items: list[Probe], batch: int, rng: random.Random) -> None:
        index: dict[tuple[str, str, str], int] = {}
        self.members: list[list[int]] = []  # per context: its items
        for i, p in enumerate(items):
            if p.context not in index:
                index[p.context] = len(self.members)
                self.members.append([])
            self.members[index[p.context]].append(i)
        self.answers = [(p.answer or "").lower() for p in items]
        self.batch, self.rng, self.pool = batch, rng, []
        self.restrict(list(range(len(items))))

    def restrict(self, ids: list[int]) -> None:
        """Draw only items in `ids` from now on (contexts left with none drop out)."""
        keep = set(ids)
        self.active = [[i for i in m if i in keep] for m in self.members]
        self.pool = [c for c in self.pool if self.active[c]]
        n_items = sum(len(m) for m in self.active)
        self.target = min(self.batch * len({self.answers[i] for i in keep}), n_items)

    def next(self) -> list[int]:
        out: list[int] = []
        while len(out) < self.target:
            if not self.pool:
                self.pool = [c for c, m in enumerate(self.active) if m]
                self.rng.shuffle(self.pool)
            out += self.active[self.pool.pop()]
        return out


class RetainDraw:
    """The retain batch of a step: the `Cycler`'s batch, and with `pair` one more retain item
    for every forget item of the step whose answer (case-folded) some retain item shares, drawn
    in turn from that answer's retain items (its own shuffled cycle, seeded by `rng`). A step
    with no such forget item draws exactly what the `Cycler` alone would."""

    def __init__(self, forget: list[Probe], retain: list[Probe], batch: int,
                 rng: random.Random, pair: bool) -> None:
        self.cycle = Cycler(len(retain), batch, rng)
        by_answer: dict[str, list[int]] = {}
        for i, p in enumerate(retain):
            if p.answer:
                by_answer.setdefault(p.answer.lower(), []).append(i)
        self.partner: dict[int, Cycler] = {}   # forget index -> its answer's retain cycle
        cycles: dict[str, Cycler] = {}
        for i, p in enumerate(forget):
            key = (p.answer or "").lower()
            if pair and key in by_answer:
                if key not in cycles:
                    cycles[key] = Cycler(len(retain), 1, rng)
                    cycles[key].restrict(by_answer[key])
                self.partner[i] = cycles[key]

    @property
    def paired_forget_items(self) -> int:
        return len(self.partner)

    def next(self, f_idx: list[int]) -> list[int]:
        """[batch + paired] retain indices for the forget batch `f_idx`."""
        out = self.cycle.next()
        for i in f_idx:
            if i in self.partner:
                out.extend(self.partner[i].next())
        return out


def progress_line(row: dict) -> str:
    line = (f"[aglora] step {row['step']:3d} loss {row['loss']:.3f} forget "
            f"{row['forget_loss']:.3f} retain {row['retain_loss']:.4f}")
    if "train_forget_accuracy" in row:
        line += (f" acc {row['train_forget_accuracy']:.2f} margin "
                 f"{row['train_forget_margin']:.2f}")
    if "refusal_share" in row:
        line += f" refusals {row['refusal_share']:.2f}"
    if "check_answer_accuracy" in row:
        line += _lagging(row["check_answer_accuracy"], row["check_lagging_answers"])
    return line


def _lagging(accuracy: dict[str, float], lagging: list[str], shown: int = 3) -> str:
    """' answers at the goal A/N, lagging: X 0.44, Y 0.31, …': the answers of a check over
    several answers (a ban's titles) not at the goal, least forgotten first."""
    behind = sorted(((a, accuracy[a]) for a in lagging), key=lambda kv: (-kv[1], kv[0]))
    text = f" answers at the goal {len(accuracy) - len(lagging)}/{len(accuracy)}"
    if behind:
        text += ", lagging: " + ", ".join(f"{a} {v:.2f}" for a, v in behind[:shown])
        text += ", …" if len(behind) > shown else ""
    return text


def chance_level(items: list[Probe]) -> float:
    """Mean chance of likelihood choice over items with options (0 when there are none)."""
    return (sum(1 / (1 + len(p.distractors)) for p in items) / len(items) if items else 0.0)


def known_at_base(model: nn.Module, tok, items: list[Probe],
                  reference: nn.Module | None = None) -> list[Probe]:
    """The items with options whose answer the base model prefers to every distractor (the
    stopping check, like the evaluation, judges forgetting on known facts only)."""
    from aglora.model.likelihood import choice_correct
    from aglora.pipeline.train.reference import base_view
    choice = [p for p in items if p.has_choice]
    with base_view(model, reference) as base:
        scores = score_options(base, tok, choice, batch_size=64)
    return [p for p, s in zip(choice, scores, strict=True) if choice_correct(s)]


def _whole_step(model: nn.Module, objective: Objective, f_idx: list[int],
                r_draw: RetainDraw | None, item_weight: torch.Tensor, rng: random.Random,
                device: torch.device) -> StepLosses:
    """The step's loss on the whole batch (one process)."""
    forget_loss = objective.forget_loss(model, f_idx, item_weight[f_idx].to(device), rng)
    retain_loss = torch.zeros((), device=device)
    kl_value: float | None = 0.0
    if r_draw is not None and objective.uses_retain:
        retain_loss, kl_value = objective.retain_loss(model, r_draw.next(f_idx), device)
    weighted_retain = objective.retain_weight * retain_loss
    loss = forget_loss + weighted_retain
    return StepLosses(loss, float(loss.detach()), float(forget_loss.detach()),
                      float(retain_loss.detach()), kl_value, forget_loss, weighted_retain)


def _now(fn: Callable[[], T]) -> T:
    return fn()


def train(model: nn.Module, tok, forget: list[Probe], retain: list[Probe], cfg: TrainConfig,
          refusals: list[str] | None = None, alternatives: list[str] | None = None,
          log: Callable[[str], None] = _log.info, params: list[nn.Parameter] | None = None,
          reference: nn.Module | None = None,
          objective: Objective | None = None,
          validation: list[Probe] | None = None,
          retain_validation: list[Probe] | None = None,
          names: list[str] | None = None, name_layer: int | None = None) -> TrainResult:
    """Optimise `params` of `model` in place (default: its LoRA parameters); returns the history.

    `objective` defaults to `AnswerObjective(model, tok, forget, retain, cfg, refusals,
    alternatives, reference, names, name_layer)`: `names` are the concept's name words and
    `name_layer` the decoder layer the name misdirection term reads. `validation`: held-out
    forget items that early stopping checks instead of the training items (the per-item
    weighting and focusing rules, which act on training items, then stay off).
    `retain_validation`: held-out retain items; with `cfg.stop_retain_accuracy`, training also
    stops once the known ones fall below that line (the neighbours' guard), whatever the forget
    side shows.
    """
    if not forget:
        raise AgloraError("the forget set is empty; nothing to unlearn")
    params = trainable_parameters(model) if params is None else params
    if not params:
        raise AgloraError("no trainable LoRA parameters: attach an adapter first")
    # the layers below the lowest trainable one run once per distinct row (one process only:
    # under a launch every process must make the same layer calls)
    with frozen_lower_layers(model) if not ranks().launched else nullcontext():
        if objective is None:
            objective = AnswerObjective(model, tok, forget, retain, cfg, refusals, alternatives,
                                        reference, names, name_layer)
        torch.manual_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        device = next(model.parameters()).device
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        launch = ranks()
        shares = (Shares(launch, objective, tok, forget, retain, params, _sharded(params))
                  if launch.launched else None)
        disruption = _disruption_mask(cfg, objective, params, shares is not None)
        sharpness = _sharpness(cfg, params, shares is not None)
        agreed = shares.agreed if shares is not None else _now  # steering decisions: the main's
        choice_index = [i for i, p in enumerate(forget) if p.has_choice]  # choice item -> forget
        checked = (agreed(lambda: known_at_base(model, tok, validation, reference)) if validation
                   else None)
        if validation and not checked:
            raise AgloraError("the base model knows none of the validation forget items (no "
                              "answer beats its distractors); run `aglora check SPEC` and keep "
                              "the items it knows")
        choice_items = checked or [forget[i] for i in choice_index]
        guarded = (agreed(lambda: known_at_base(model, tok, retain_validation, reference))
                   if retain_validation and cfg.stop_retain_accuracy is not None else [])
        on_training_items = checked is None
        item_weight = torch.ones(len(forget))  # [n_forget] forget-term weight per item
        chance = chance_level(choice_items)
        checker = GoalChecker(choice_items, cfg, chance)
        phrases = refusals or []
        refusal_items, over_refusal_items = _refusal_check_items(cfg, forget, validation,
                                                                 retain_validation)
        f_cycle = (ContextCycler(forget, cfg.batch_size, rng) if cfg.batch_by_context
                   else Cycler(len(forget), cfg.batch_size, rng))
        r_draw = (RetainDraw(forget, retain, cfg.batch_size, rng, cfg.pair_shared_answers)
                  if retain else None)
        result = TrainResult()
        start = time.time()
        model.train()
        try:
            for step in range(1, cfg.max_steps + 1):
                f_idx = f_cycle.next()
                # the forget term's draws, for the sharpness rule's second forget pass
                rng_state = rng.getstate() if sharpness is not None else None
                if shares is None:
                    step_losses = _whole_step(model, objective, f_idx, r_draw, item_weight, rng,
                                              device)
                else:
                    retain_batch = (partial(r_draw.next, f_idx)
                                    if r_draw is not None and objective.uses_retain else None)
                    step_losses = shares.losses(model, f_idx, retain_batch, item_weight, rng,
                                                device)
                if not math.isfinite(step_losses.total):
                    raise AgloraError(f"training diverged at step {step} (loss "
                                      f"{step_losses.total}); lower train.lr or use the npo "
                                      "objective")
                opt.zero_grad(set_to_none=True)
                if disruption is not None:
                    disruption.backward(step_losses.forget_term, step_losses.weighted_retain)
                elif sharpness is not None:
                    sharpness.backward(step_losses.forget_term, step_losses.weighted_retain,
                                       partial(_forget_again, objective, model, f_idx,
                                               item_weight, rng_state, device))
                else:
                    step_losses.loss.backward()
                if shares is not None:
                    shares.reduce_grads(params)
                opt.step()
                row = {"step": step, "loss": step_losses.total,
                       "forget_loss": step_losses.forget, "retain_loss": step_losses.retain}
                if disruption is not None:
                    row["forget_entries_kept"] = disruption.kept_share
                if sharpness is not None:
                    row.update(sharpness_rho=sharpness.rho, sharpness_rise=sharpness.rise)
                if step_losses.retain_kl is not None:
                    row["retain_kl"] = step_losses.retain_kl
                row["seconds"] = time.time() - start
                if choice_items and step % cfg.check_every == 0:
                    check_start = time.time()
                    model.eval()
                    # confirm: a stop may be declared at this check
                    check = agreed(partial(checker.check, model, tok, step >= cfg.min_steps))
                    refused = True
                    if refusal_items:
                        share = agreed(partial(refusal_share, model, tok, refusal_items, phrases))
                        row["refusal_share"] = share
                        refused = share >= cfg.stop_refusal_share
                        if over_refusal_items:
                            row["retain_validation_refusal_share"] = agreed(partial(
                                refusal_share, model, tok, over_refusal_items, phrases))
                    model.train()
                    row.update(train_forget_accuracy=check.accuracy,
                               train_forget_margin=check.margin, check_items=check.scored,
                               check_answers_at_goal=len(check.answers_at_goal))
                    if len(check.answer_accuracy) > 1:
                        row["check_answer_accuracy"] = dict(check.answer_accuracy)
                        row["check_lagging_answers"] = sorted(
                            set(check.answer_accuracy) - check.answers_at_goal)
                    if cfg.focus_lagging_answers and on_training_items:
                        row["answers_at_goal"] = sorted(check.answers_at_goal)
                        active = [i for i, p in enumerate(forget)
                                  if (p.answer or "") not in check.answers_at_goal]
                        f_cycle.restrict(active or list(range(len(forget))))
                    if cfg.forget_weight_at_goal != 1.0 and on_training_items:
                        item_weight.fill_(1.0)
                        item_weight[[choice_index[i] for i in check.items_at_goal]] = (
                            cfg.forget_weight_at_goal)
                        row["forget_items_at_goal"] = len(check.items_at_goal)
                    if check.met and refused and step >= cfg.min_steps:
                        result.stopped_early = True
                        result.stop_reason = ("forget items at the goal" if not refusal_items else
                                              "forget items at the goal, refusals at their share")
                    if guarded:
                        kept = agreed(lambda: choice_summary(
                            score_options(model, tok, guarded, batch_size=64))[0])
                        row["retain_validation_accuracy"] = kept
                        if kept < cfg.stop_retain_accuracy and not result.stopped_early:
                            result.stopped_early = True
                            result.stop_reason = "neighbour guard"
                    row["check_seconds"] = time.time() - check_start
                    result.check_seconds += row["check_seconds"]
                    row["seconds"] = time.time() - start
                result.history.append(row)
                log(progress_line(row))
                result.steps = step
                if result.stopped_early:
                    break
            model.eval()
            if cfg.check_final_full and choice_items:
                check_start = time.time()
                result.final_check = agreed(lambda: checker.full(model, tok))
                result.final_check["seconds"] = time.time() - check_start
                result.check_seconds += result.final_check["seconds"]
        finally:
            model.eval()
        result.seconds = time.time() - start
        return result


def _refusal_check_items(cfg: TrainConfig, forget: list[Probe], validation: list[Probe] | None,
                         retain_validation: list[Probe] | None
                         ) -> tuple[list[Probe], list[Probe]]:
    """(chat forget items whose greedy answers a check classifies, chat held-out retain items
    whose refusals it records) under `forget_response refuse` with `stop_refusal_share`; both
    empty otherwise. The validation split's items when there is one, else the training items."""
    if cfg.forget_response != "refuse" or cfg.stop_refusal_share <= 0:
        return [], []
    chat = [p for p in (validation or forget) if p.format == "chat"]
    return chat, [p for p in (retain_validation or []) if p.format == "chat"]


def _disruption_mask(cfg: TrainConfig, objective: Objective, params: list[nn.Parameter],
                     launched: bool) -> DisruptionMask | None:
    """The disruption mask of `train.disruption_mask` (None when off); refused where it cannot
    work: without a retain term, or under a multi-process launch."""
    if not cfg.disruption_mask:
        return None
    if not objective.uses_retain:
        raise AgloraError("train.disruption_mask needs a retain term (retain items and "
                          "train.retain_objective other than none): it masks the forget "
                          "gradient by the retain gradient's sign")
    if launched:
        raise AgloraError("train.disruption_mask runs on one process only; launch without "
                          "accelerate or turn it off")
    return DisruptionMask(params, cfg.disruption_momentum)


def _sharpness(cfg: TrainConfig, params: list[nn.Parameter],
               launched: bool) -> SharpnessAware | None:
    """The sharpness-aware rule of `train.sharpness_radius` (None when off); one process only."""
    if cfg.sharpness_radius <= 0:
        return None
    if launched:
        raise AgloraError("train.sharpness_radius runs on one process only; launch without "
                          "accelerate or set it to 0")
    return SharpnessAware(params, cfg.sharpness_radius, cfg.lr)


def _forget_again(objective: Objective, model: nn.Module, f_idx: list[int],
                  item_weight: torch.Tensor, rng_state: tuple, device: torch.device
                  ) -> torch.Tensor:
    """The step's forget term recomputed on the same batch with the same draws."""
    rng = random.Random()
    rng.setstate(rng_state)
    return objective.forget_loss(model, f_idx, item_weight[f_idx].to(device), rng)


def _sharded(params: list[nn.Parameter]) -> bool:
    """Whether `params` are FSDP shards (`shares.shard_layers`)."""
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in params)


@contextmanager
def unfrozen(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Train `params` of `model`: unfrozen inside; on exit, even on an error, the model is back
    in eval mode with `params` frozen and their gradients dropped (full-parameter training)."""
    for p in params:
        p.requires_grad_(True)
    model.train()
    try:
        yield
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
