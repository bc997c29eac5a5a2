"""Settings of a ban that are not part of the run config: prompts, generation, ranking.

Given on the command line as `--set recommend.KEY=VALUE` (the other `--set` keys go to the run
config); saved as `recommend.json` in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aglora.errors import AgloraError
from aglora.settings import build, check_range, parse_value, setting


@dataclass
class RecConfig:
    seed: int = setting(0, "seed of the prompt generator (train and eval prompts)")
    n_train_prompts: int = setting(32, "training profile prompts (forget and retain items)")
    n_eval_prompts: int = setting(120, "held-apart profile prompts for exposure and lists")
    n_rank_prompts: int = setting(8, "held-apart prompts on which the whole catalogue is ranked")
    n_samples: int = setting(2, "seeded sampled lists per eval prompt, besides the greedy one")
    temperature: float = setting(0.7, "sampling temperature of the sampled lists")
    max_new_tokens: int = setting(64, "tokens generated per list")
    gen_batch: int = setting(16, "prompts per generation batch")
    rank_chunk: int = setting(104, "titles scored per forward pass when ranking the catalogue")
    pool_size: int = setting(
        24,
        "titles scored on each training prompt to pick forget distractors and the retain answer")
    forget_distractors: str = setting(
        "median",
        "distractors of the forget recommendation items (and so the early-stopping goal): 'median'"
        " = the pool titles just below the pool's median, 'next' = the three ranked just below the"
        " banned title")
    forget_distractor_quantile: float = setting(
        0.5,
        "with forget_distractors=median: where in the pool's order (best first) the three "
        "distractors start; 0.5 = the pool's median, higher = a lower goal for the banned titles")
    facts_per_neighbour: int = setting(2, "retain fact items per neighbouring film")
    replace_in_lists: bool = setting(
        False,
        "also keep, as retain items, the base lists that name a banned title, with each banned "
        "item replaced by the real catalogue title the base model ranks highest for that prompt "
        "(family list-replaced)")
    protect_top: int = setting(
        0,
        "retain items (family protected) for the N titles the base model lists most often on the "
        "training prompts, one per prompt in turn as the list's first item")
    seed_gen: int = setting(0, "seed of the sampled generations")
    mask_per_title: bool = setting(
        True,
        "the run config's mask.k counts neurons per banned title: the ban's mask holds k x the "
        "number of titles (each title gets room of its own); a mask.k given with --set is the "
        "whole mask's")

    def __post_init__(self) -> None:
        for name in ("n_train_prompts", "n_eval_prompts", "n_rank_prompts", "max_new_tokens",
                     "gen_batch", "rank_chunk", "pool_size"):
            if getattr(self, name) < 1:
                raise AgloraError(f"recommend.{name}={getattr(self, name)}: must be at least 1")
        if self.protect_top < 0:
            raise AgloraError(f"recommend.protect_top={self.protect_top}: must be 0 or more")
        for name in ("n_samples", "facts_per_neighbour"):
            check_range(f"recommend.{name}", getattr(self, name), 0)
        check_range("recommend.temperature", self.temperature, 0, low_open=True)
        if self.forget_distractors not in ("median", "next"):
            raise AgloraError(f"recommend.forget_distractors={self.forget_distractors!r}: use "
                              "median or next")
        if not 0.0 <= self.forget_distractor_quantile <= 1.0:
            raise AgloraError(f"recommend.forget_distractor_quantile="
                              f"{self.forget_distractor_quantile}: must be between 0 and 1")
        if self.n_rank_prompts > self.n_eval_prompts:
            raise AgloraError("recommend.n_rank_prompts must not exceed recommend.n_eval_prompts")


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(run-config overrides, recommend.* values parsed as YAML)."""
    run, rec = [], {}
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.startswith("recommend."):
            if "=" not in item:
                raise AgloraError(f"override {item!r}: expected KEY=VALUE")
            rec[key.split(".", 1)[1]] = parse_value(item, item.split("=", 1)[1])
        else:
            run.append(item)
    return run, rec


def rec_config(values: dict[str, Any]) -> RecConfig:
    """The ban settings from `recommend.KEY` values, every value checked against its type."""
    return build(RecConfig, values, "recommend.")
