"""Settings of the controlled track: plain dataclasses (no torch import), checked on creation.

The command line (`aglora controlled`) sets them; their defaults are the track's protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from aglora.errors import AgloraError
from aglora.methods import METHODS

DEFAULT_METHODS = ["ag_lora", "plain_lora", "random_lora", "full_gd", "full_npo"]
KNOWN_METHODS = tuple(METHODS)  # the shared registry (its names need no torch)


@dataclass
class ImplantConfig:
    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 16
    weight_decay: float = 0.0
    warmup_steps: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise AgloraError(f"implant settings {asdict(self)}: epochs and batch_size must be "
                              ">= 1 and lr > 0")


@dataclass
class MethodSettings:
    steps: int = 10
    batch_size: int = 8
    lora_lr: float = 1e-2         # the demo's learning rate for masked LoRA
    full_lr: float = 1e-4
    rank: int = 8
    k: int = 128
    npo_beta: float = 0.5
    lora_retain_weight: float = 10.0
    full_retain_weight: float = 1.0
    record_retain: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.k < 1 or self.rank < 1:
            raise AgloraError("method settings: steps, batch_size, k and rank must be >= 1")


@dataclass
class ControlledConfig:
    seed: int = 0
    n_films: int = 20
    n_forget: int = 2
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    fq_wording: str = "both"       # forget-set probes for forget quality: question|paraphrase|both
    utility_films: int = 6         # retain films evaluated for model utility (both wordings)
    real_world_limit: int = 20     # TOFU world-facts / real-authors probes per file
    eval_batch_size: int = 16
    implant: ImplantConfig = field(default_factory=ImplantConfig)
    method: MethodSettings = field(default_factory=MethodSettings)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown or not self.methods:
            raise AgloraError(f"unknown method(s) {unknown or self.methods}; choose from "
                              f"{', '.join(KNOWN_METHODS)}")
        if self.fq_wording not in ("question", "paraphrase", "both"):
            raise AgloraError(f"fq_wording={self.fq_wording!r}: use question, paraphrase or both")
        if self.utility_films < 1 or self.utility_films > self.n_films - self.n_forget:
            raise AgloraError(f"utility_films={self.utility_films}: must be between 1 and the "
                              f"number of retain films ({self.n_films - self.n_forget})")
