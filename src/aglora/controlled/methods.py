"""The controlled track's methods: the shared registry of `aglora.methods` on a fixed budget.

The track unlearns with exactly the code `aglora bench` compares (`aglora.methods.apply_method`, the
one training loop of `aglora.pipeline.train`); this module only translates the track's
`MethodSettings` into the run configuration each method reads, and computes the activation-guided
scores for the methods that need them. Differences from `aglora bench`, all from the TOFU protocol:

- every method gets exactly `settings.steps` optimisation steps (no early stopping: `min_steps`
  equals `max_steps`, one check at the end);
- the full-parameter baselines use open-unlearning's retain term, NLL on the retain items, with
  `full_lr` and `full_retain_weight`; the LoRA methods use aglora's NPO + KL(full || model) with
  `lora_lr` and `lora_retain_weight`;
- scores come from recording the forget items against `record_retain` sampled retain items (ratio
  scorer), the neuron budget is `settings.k`.

`run_method(name, model, tok, forget, retain, settings, log) -> MethodOutcome` runs any name of the
shared registry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from aglora.concepts import ConceptSpec, Probe
from aglora.config import LoraConfig, MaskConfig, RunConfig, TrainConfig
from aglora.controlled.settings import MethodSettings
from aglora.methods import apply_method
from aglora.methods.base import MethodInputs

_log = logging.getLogger("aglora")


FULL_PARAMETER = ("full_gd", "full_npo", "rmu")
NEEDS_SCORES = ("ag_lora", "act_edit")


@dataclass
class MethodOutcome:
    model: nn.Module
    steps: int
    trainable_params: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def run_config(name: str, s: MethodSettings) -> RunConfig:
    """The run configuration method `name` reads, from the track's settings."""
    full = name in FULL_PARAMETER
    train = TrainConfig(forget_objective="npo", retain_objective="nll" if full else "kl",
                        retain_weight=s.full_retain_weight if full else s.lora_retain_weight,
                        npo_beta=s.npo_beta, lr=s.full_lr if full else s.lora_lr,
                        batch_size=s.batch_size, max_steps=s.steps, min_steps=s.steps,
                        check_every=s.steps, seed=s.seed)
    return RunConfig(name=f"controlled-{name}", mask=MaskConfig(k=s.k),
                     lora=LoraConfig(rank=s.rank), train=train, seed=s.seed)


def _scores(model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
            s: MethodSettings) -> dict:
    """Record forget vs a seeded sample of retain items and score with the ratio scorer."""
    from aglora.pipeline.record import record
    from aglora.pipeline.score import compute_scores
    rec_retain = random.Random(s.seed).sample(retain, min(s.record_retain, len(retain)))
    stats = record(model, tok, forget, rec_retain, batch_size=s.batch_size)
    return {"score": compute_scores(stats, "ratio")["score"],  # [n_layers, d_ff]
            "retain_mean": stats.get("retain.act_mean")}


def run_method(name: str, model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
               s: MethodSettings, log: Callable[[str], None] = _log.info) -> MethodOutcome:
    """Unlearn `forget` from `model` (left unchanged) with the shared method `name`."""
    start = time.time()
    extra: dict = {}
    scores = {"score": None, "retain_mean": None}
    if name in NEEDS_SCORES:
        scores = _scores(model, tok, forget, retain, s)
        extra.update(record_seconds=round(time.time() - start, 1), k=s.k)
    concept = ConceptSpec(name="controlled", forget=forget, retain=retain, leak_patterns=[],
                          refusals=[], alternatives=[], probe_files=[], source=None)
    inp = MethodInputs(cfg=run_config(name, s), concept=concept, scores=scores["score"],
                       retain_mean=scores["retain_mean"], log=log)
    un = apply_method(name, model, tok, inp)
    if un.mask is not None:
        extra["mask_layers"] = un.mask.layers_with_neurons()
        log(f"[controlled] {name}: {un.mask.n_selected} neurons in layers "
            f"{extra['mask_layers']}")
    extra["effective_params"] = un.effective_params
    return MethodOutcome(un.after, un.train.steps, un.trainable_params, time.time() - start,
                         un.train.history, extra)

