"""The robustness attacks of an evaluation, as its settings ask: `metrics.json`'s `relearn`,
`relearn_benign` and `relearn_in_context`.

* `relearn` (`eval.relearn_curve`, and `eval.relearn_steps` as one more checkpoint): the
  fine-tuning attack on a quarter of the base-known forget facts, a curve over the checkpoints;
* `relearn_benign` (`eval.relearn_benign`, at the same checkpoints): fine-tuning on neighbour
  and utility answers only;
* `relearn_in_context` (`eval.relearn_in_context`): the attack quarter's facts in the prompt.

Each fine-tune gets its own standalone copy of the unlearned model (made when it starts, freed
when it ends), so at most one copy with its optimiser state is held at a time; the in-context
attack reads a merged copy (the evaluation's after side) and the base model. Every result
carries its wall time (`seconds`). The attacks share one learning rate, batch size and seed
(`eval.seed`): the single attack's, as it was.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from torch import nn

from aglora.concepts import Probe
from aglora.config import EvalConfig
from aglora.model.adapter import standalone_copy
from aglora.pipeline.eval.in_context import in_context_attack
from aglora.pipeline.eval.relearn import benign_attack, relearn_attack

log = logging.getLogger("aglora")

LR, BATCH_SIZE = 1e-5, 4


def relearn_checkpoints(cfg: EvalConfig) -> list[int]:
    """The fine-tuning attacks' checkpoints: `relearn_curve`, plus `relearn_steps` when > 0."""
    return sorted(set(cfg.relearn_curve) | ({cfg.relearn_steps} if cfg.relearn_steps else set()))


def _timed(attack: Callable[[], dict]) -> dict:
    start = time.time()
    out = attack()
    gc.collect()  # the attacked copy and its optimiser state go before the next attack
    return {**out, "seconds": round(time.time() - start, 3)}


def robustness(model: nn.Module, tok, probes: list[Probe], records: list[dict],
               cfg: EvalConfig, checkpoints: list[int]) -> dict[str, dict]:
    """The attacks `cfg` asks for on `model` (the unlearned model; left unchanged), with the
    evaluation's per-probe `records` (`base_scores`, `after_scores`); keyed as in metrics.json.
    `checkpoints`: the fine-tuning attacks' (empty: neither runs)."""
    base = [r["base_scores"] for r in records]
    after = [r["after_scores"] for r in records]
    common = {"seed": cfg.seed, "score_batch_size": cfg.batch_size}
    out: dict[str, dict] = {}
    if cfg.relearn_in_context:
        log.info("[aglora] in-context attack")
        out["relearn_in_context"] = _timed(lambda: in_context_attack(
            model, tok, probes, base, after, after_model=standalone_copy(model), **common))
    if cfg.relearn_benign and not checkpoints:
        log.warning("[aglora] eval.relearn_benign needs checkpoints (eval.relearn_curve): "
                    "skipped")
    if not checkpoints:
        return out
    log.info(f"[aglora] relearning attack: checkpoints {checkpoints}")
    out["relearn"] = _timed(lambda: relearn_attack(
        standalone_copy(model), tok, probes, base, after, checkpoints, LR, BATCH_SIZE, **common))
    if cfg.relearn_benign:
        log.info(f"[aglora] benign relearning attack: checkpoints {checkpoints}")
        out["relearn_benign"] = _timed(lambda: benign_attack(
            standalone_copy(model), tok, probes, base, after, checkpoints, LR, BATCH_SIZE,
            **common))
    return out
