"""Early stopping: are the forget items at the goal on likelihood choice?

The goal is chance (or `train.stop_accuracy`) with a mean margin at most `train.stop_margin`,
over all choice items and, with `train.stop_each_answer`, for every answer's items on their own
(a ban of several titles stops only when each title is there, not when they are on average).

A check costs a forward pass over every checked item's options; a ban of many titles has one
item per title and training prompt, so checking them all can cost more than the steps between
two checks. `GoalChecker` makes a check cheaper in three ways:

* **A fixed subset per answer** (`train.check_items_per_answer`): each answer's items ordered
  by a seeded hash of their context, the first N kept. The order is the same for every answer,
  so the answers of a ban pick the same training prompts and their items share contexts, and on
  one prompt they share their distractors too (`likelihood` scores a shared option once).
* **Incremental** (`train.check_incremental`, with `stop_each_answer`): an answer whose items
  were at the goal at an earlier check is not rescored; only the lagging answers are. When the
  stored scores say every answer is at the goal, the answers not rescored are scored again
  before the stop is declared (the *confirm*), so a stop is always decided on fresh scores of
  every checked item, and the stop step is the one a full check of the same items gives (an
  answer that climbed back above the goal is caught there and counts as lagging again). The
  answers at the goal are rechecked only at the confirm, not at a lower rate in between: with
  these settings the stop is the only decision a check feeds, and a recheck between confirms
  would cost scoring without moving the stop step. The rules that act on items between checks
  (`focus_lagging_answers`, `forget_weight_at_goal`) and `stop_each_form` (a family mixes
  answers) need every item fresh, so with them a check rescores all.
* **One full check at the end** (`train.check_final_full`): every training choice item scored
  once after the last step and recorded, so that a run on the subset shows what the full check
  says at its stop step. Most of its items are scored only there, so it leaves the training
  loop's lower-layer row cache aside (`forward.lower_layers_uncached`; the periodic checks,
  which score the same subset again and again, read it).

With `train.forget_response refuse` the likelihood goal is not the whole goal: a model whose
answer no longer beats its distractors may still answer with a mangled name rather than a
refusal. `refusal_share` generates greedy answers to the checked chat forget items (a few
tokens: the classifier reads the first sentence) and counts the refusals with the evaluation's
own classifier (`aglora.pipeline.eval.answers.is_refusal`); the loop stops only once that share
reaches `train.stop_refusal_share` too. Generation, not a likelihood, because a refusal is one
of many phrasings: no single sequence's likelihood says whether greedy decoding opens with one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from aglora.concepts import Probe
from aglora.config import TrainConfig
from aglora.model.decode import generate
from aglora.model.forward import lower_layers_uncached
from aglora.model.likelihood import choice_correct, choice_summary, score_options
from aglora.pipeline.eval.answers import is_refusal

Scorer = Callable[[nn.Module, object, list[Probe]], list[list[float]]]
REFUSAL_CHECK_TOKENS = 16  # greedy tokens per answer at a refusal check: a first sentence


class GoalCheck(NamedTuple):
    """Likelihood choice on the forget items at an early-stopping check."""
    met: bool                    # the stopping goal is met
    accuracy: float
    margin: float                # mean answer - best distractor (nats)
    answers_at_goal: set[str]    # answers whose own items are at the goal
    items_at_goal: set[int]      # indices into the checked items whose answer no longer beats
                                 # every distractor
    scored: int = 0              # items scored at this check (the confirm included)
    answer_accuracy: dict[str, float] = {}  # each answer's accuracy on its checked items
                                 # (an answer not rescored: its last scores)


def _by(items: list[Probe], scores: list[list[float]], key) -> dict[str, list[list[float]]]:
    groups: dict[str, list[list[float]]] = {}
    for item, row in zip(items, scores, strict=True):
        groups.setdefault(key(item), []).append(row)
    return groups


def _at_goal(rows: list[list[float]], goal: float, max_margin: float) -> bool:
    acc, marg = choice_summary(rows)
    return acc <= goal and marg <= max_margin


def judge(items: list[Probe], scores: list[list[float]], cfg: TrainConfig,
          chance: float) -> GoalCheck:
    """The goal check on given scores of `items` (see `forget_goal_met`)."""
    acc, marg = choice_summary(scores)
    goal = cfg.stop_accuracy if cfg.stop_accuracy is not None else chance
    met = acc <= goal and marg <= cfg.stop_margin
    groups = _by(items, scores, lambda p: p.answer or "")
    done = {answer for answer, rows in groups.items() if _at_goal(rows, goal, cfg.stop_margin)}
    per_answer = {answer: choice_summary(rows)[0] for answer, rows in groups.items()}
    if cfg.stop_each_answer:
        met = met and done == set(groups)
    if cfg.stop_each_form:
        met = met and all(_at_goal(rows, goal, cfg.stop_margin)
                          for rows in _by(items, scores, lambda p: p.family).values())
    below = {i for i, row in enumerate(scores) if row and not choice_correct(row)}
    return GoalCheck(met, acc, marg, done, below, len(items), per_answer)


def forget_goal_met(model: nn.Module, tok, items: list[Probe], cfg: TrainConfig,
                    chance: float) -> GoalCheck:
    """Likelihood choice on the forget items: goal met, accuracy, mean margin, the answers and
    the items at the goal. An answer is at the goal when its own items are (accuracy <= chance
    or `stop_accuracy`, mean margin <= `stop_margin`); with `cfg.stop_each_answer` every answer
    must be, besides all items on average (a ban of several titles stops only when every title
    is at chance, not when they are on average); with `cfg.stop_each_form` every family (form)
    of the items must be."""
    return judge(items, score_options(model, tok, items, batch_size=64), cfg, chance)


def context_rank(item: Probe, seed: int) -> str:
    """A seeded, stable order of contexts: the same for every answer on the same context."""
    text = f"{seed}\x00{item.format}\x00{item.prompt}\x00{item.prefix}"
    return hashlib.sha256(text.encode()).hexdigest()


def check_subset(items: list[Probe], per_answer: int, seed: int) -> list[int]:
    """Indices of the items a check scores: every item when `per_answer` is 0, else each
    answer's first `per_answer` items in `context_rank` order (in the items' order)."""
    if per_answer <= 0:
        return list(range(len(items)))
    by_answer: dict[str, list[int]] = {}
    for i, p in enumerate(items):
        by_answer.setdefault(p.answer or "", []).append(i)
    keep = {i for ids in by_answer.values()
            for i in sorted(ids, key=lambda i: (context_rank(items[i], seed), i))[:per_answer]}
    return sorted(keep)


def incremental_applies(cfg: TrainConfig) -> bool:
    """Whether a check may leave the answers at the goal unscored (module docstring)."""
    return (cfg.check_incremental and cfg.stop_each_answer and not cfg.stop_each_form
            and not cfg.focus_lagging_answers and cfg.forget_weight_at_goal == 1.0)


def _score(model: nn.Module, tok, items: list[Probe]) -> list[list[float]]:
    return score_options(model, tok, items, batch_size=64)


class GoalChecker:
    """The early-stopping check over `items` (the choice items), cheaper by the settings in the
    module docstring; `check` returns what `forget_goal_met` returns, on the checked subset,
    with `items_at_goal` as indices into `items`."""

    def __init__(self, items: list[Probe], cfg: TrainConfig, chance: float,
                 scorer: Scorer = _score) -> None:
        self.items, self.cfg, self.chance, self.scorer = items, cfg, chance, scorer
        self.chosen = check_subset(items, cfg.check_items_per_answer, cfg.seed)
        self.incremental = incremental_applies(cfg)
        self.scores: dict[int, list[float]] = {}  # item index -> last scores
        self.at_goal: set[str] = set()  # answers at the goal at their last scoring

    def _rescore(self, model: nn.Module, tok, ids: list[int]) -> None:
        if ids:
            for i, row in zip(ids, self.scorer(model, tok, [self.items[i] for i in ids]),
                              strict=True):
                self.scores[i] = row

    def _judge(self, scored: int) -> GoalCheck:
        check = judge([self.items[i] for i in self.chosen],
                      [self.scores[i] for i in self.chosen], self.cfg, self.chance)
        self.at_goal = check.answers_at_goal
        return check._replace(items_at_goal={self.chosen[j] for j in check.items_at_goal},
                              scored=scored)

    def check(self, model: nn.Module, tok, confirm: bool = True) -> GoalCheck:
        """Score the lagging answers' items (all, unless incremental); when that says the goal
        is met and `confirm`, score the others too and judge again."""
        lagging = [i for i in self.chosen if not self.incremental
                   or (self.items[i].answer or "") not in self.at_goal or i not in self.scores]
        self._rescore(model, tok, lagging)
        result = self._judge(len(lagging))
        if result.met and confirm and len(lagging) < len(self.chosen):
            fresh = set(lagging)
            rest = [i for i in self.chosen if i not in fresh]
            self._rescore(model, tok, rest)
            result = self._judge(len(self.chosen))
        return result

    def full(self, model: nn.Module, tok) -> dict:
        """One check of every item (not the subset), as a record: met, accuracy, margin, and
        each answer's accuracy and whether it is at the goal."""
        with lower_layers_uncached():  # most items are scored here only: no row cache
            scores = self.scorer(model, tok, self.items)
        check = judge(self.items, scores, self.cfg, self.chance)
        per_answer = {answer: choice_summary(rows)[0]
                      for answer, rows in _by(self.items, scores, lambda p: p.answer or "").items()}
        return {"met": check.met, "accuracy": check.accuracy, "margin": check.margin,
                "items": len(self.items), "answers": len(per_answer),
                "answers_at_goal": len(check.answers_at_goal), "answer_accuracy": per_answer}


def refusal_share(model: nn.Module, tok, items: list[Probe], phrases: list[str]) -> float | None:
    """Share of greedy answers to the chat items of `items` that are refusals (`is_refusal`
    with `phrases`); None when no item is a chat question."""
    chat = [p for p in items if p.format == "chat"]
    if not chat:
        return None
    answers = generate(model, tok, chat, n_samples=0, max_new_tokens=REFUSAL_CHECK_TOKENS,
                       batch_size=64)  # [n_chat][greedy]
    return sum(is_refusal(a[0], phrases) for a in answers) / len(chat)
