"""Early stopping: are the forget items at the goal on likelihood choice?

The goal is chance (or `train.stop_accuracy`) with a mean margin at most `train.stop_margin`,
over all choice items and, with `train.stop_each_answer`, for every answer's items on their own
(a ban of several titles stops only when each title is there, not when they are on average).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.model.likelihood import choice_correct, choice_summary, score_options


class GoalCheck(NamedTuple):
    """Likelihood choice on the forget items at an early-stopping check."""
    met: bool                    # the stopping goal is met
    accuracy: float
    margin: float                # mean answer - best distractor (nats)
    answers_at_goal: set[str]    # answers whose own items are at the goal
    items_at_goal: set[int]      # indices into the checked items whose answer no longer beats
                                 # every distractor


def _by(items: list[Probe], scores: list[list[float]], key) -> dict[str, list[list[float]]]:
    groups: dict[str, list[list[float]]] = {}
    for item, row in zip(items, scores, strict=True):
        groups.setdefault(key(item), []).append(row)
    return groups


def _at_goal(rows: list[list[float]], goal: float, max_margin: float) -> bool:
    acc, marg = choice_summary(rows)
    return acc <= goal and marg <= max_margin


def forget_goal_met(model: nn.Module, tok, items: list[Probe], cfg: TrainConfig,
                    chance: float) -> GoalCheck:
    """Likelihood choice on the forget items: goal met, accuracy, mean margin, the answers and
    the items at the goal. An answer is at the goal when its own items are (accuracy <= chance
    or `stop_accuracy`, mean margin <= `stop_margin`); with `cfg.stop_each_answer` every answer
    must be, besides all items on average (a ban of several titles stops only when every title
    is at chance, not when they are on average); with `cfg.stop_each_form` every family (form)
    of the items must be."""
    scores = score_options(model, tok, items, batch_size=64)
    acc, marg = choice_summary(scores)
    goal = cfg.stop_accuracy if cfg.stop_accuracy is not None else chance
    met = acc <= goal and marg <= cfg.stop_margin
    groups = _by(items, scores, lambda p: p.answer or "")
    done = {answer for answer, rows in groups.items() if _at_goal(rows, goal, cfg.stop_margin)}
    if cfg.stop_each_answer:
        met = met and done == set(groups)
    if cfg.stop_each_form:
        met = met and all(_at_goal(rows, goal, cfg.stop_margin)
                          for rows in _by(items, scores, lambda p: p.family).values())
    below = {i for i, row in enumerate(scores) if row and not choice_correct(row)}
    return GoalCheck(met, acc, marg, done, below)
