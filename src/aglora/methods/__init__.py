"""Unlearning methods behind one registry, for side-by-side comparison (`aglora bench`).

| name          | what it trains                                                              |
| ------------- | --------------------------------------------------------------------------- |
| `ag_lora`     | LoRA confined to the activation-guided neurons (the aglora method)          |
| `plain_lora`  | the same LoRA objective and rank on every layer, no mask                    |
| `random_lora` | masked LoRA on as many neurons, chosen at random (the ablation)             |
| `full_gd`     | full-parameter gradient difference (ascent on forget, NLL on retain)        |
| `full_npo`    | full-parameter NPO with the run's retain term                               |
| `rmu`         | representation misdirection on a few layers' MLP (WMDP)                     |
| `act_edit`    | no training: the selected neurons zeroed or clamped at inference            |

Every trained method runs the one training loop (`aglora.pipeline.train.loop.train`) and
contributes what differs: the trainable parameters, the reference model, or the loss (RMU).
The registry below is the only list of methods; it names each method's function by module path
and imports it on first use, so the names are known without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aglora.errors import AgloraError

if TYPE_CHECKING:
    from aglora.methods.base import MethodInputs, Unlearned


@dataclass(frozen=True)
class MethodSpec:
    target: str               # "module:function"
    help: str
    seeded: bool = True       # False: the result does not depend on the seed (run one seed)

    def load(self):
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, MethodSpec] = {
    "ag_lora": MethodSpec("aglora.methods.lora:ag_lora",
                          "LoRA confined to the activation-guided neurons"),
    "plain_lora": MethodSpec("aglora.methods.lora:plain_lora",
                             "the same LoRA objective and rank on every layer's modules, no mask"),
    "random_lora": MethodSpec("aglora.methods.lora:random_lora",
                              "masked LoRA on as many neurons as ag_lora, chosen at random"),
    "full_gd": MethodSpec("aglora.methods.full:full_gd",
                          "full-parameter gradient difference: ascent on forget + NLL on retain"),
    "full_npo": MethodSpec("aglora.methods.full:full_npo",
                           "full-parameter NPO with the run's retain term"),
    "rmu": MethodSpec("aglora.methods.rmu:rmu",
                      "representation misdirection on a few layers' MLP weights (WMDP)"),
    "act_edit": MethodSpec("aglora.methods.act_edit:act_edit",
                           "no training: the AG-selected neurons zeroed or clamped at inference",
                           seeded=False),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise AgloraError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def apply_method(name: str, base, tok, inp: MethodInputs) -> Unlearned:
    """Run one registered method on `base` (left unchanged)."""
    return get_method(name).load()(base, tok, inp)
