"""Settings of the methods that need their own (RMU, activation edit), built by the toolkit.

Torch-free, so that bench and controlled-track settings can be checked before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from aglora.config import MLP_MODULES
from aglora.errors import AgloraError
from aglora.settings import check_range, setting


@dataclass
class RmuConfig:
    layer: float = setting(
        0.25,
        "the layer whose output is steered: an index (>= 1) or a share of the depth (< 1; WMDP "
        "used layer 7 of 32)")
    n_layers: int = setting(3, "layers trained, ending at `layer`")
    modules: list[str] = setting(["down_proj"], "MLP weights trained in those layers")
    steering: float = setting(
        4.0,
        "target norm, in units of the base model's mean activation norm at the layer on the forget"
        " tokens")
    alpha: float = setting(100.0, "weight of the retain term")
    seed: int = setting(0, "seed of the random direction (the run's train.seed is added)")

    def __post_init__(self) -> None:
        bad = [m for m in self.modules if m not in MLP_MODULES]
        if bad or not self.modules:
            raise AgloraError(f"rmu.modules={self.modules}: choose from {list(MLP_MODULES)}")
        if self.n_layers < 1:
            raise AgloraError(f"rmu.n_layers={self.n_layers}: must be at least 1")
        check_range("rmu.layer", self.layer, 0, low_open=True,
                    fix="a layer index >= 1 or a share of the depth < 1")
        check_range("rmu.steering", self.steering, 0, low_open=True)
        check_range("rmu.alpha", self.alpha, 0)


EDIT_MODES = ("zero", "mean")


@dataclass
class ActEditConfig:
    mode: str = setting(
        "zero",
        "zero | mean: the value the selected neurons are clamped to (mean = their mean activation "
        "on the retain items)")

    def __post_init__(self) -> None:
        if self.mode not in EDIT_MODES:
            raise AgloraError(f"act_edit.mode={self.mode!r}: use {' or '.join(EDIT_MODES)}")
