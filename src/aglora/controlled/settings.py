"""Settings of the controlled track: plain dataclasses (no torch import), checked on creation.

The command line (`aglora controlled`) sets them; their defaults are the track's protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from aglora.errors import AgloraError
from aglora.methods import METHODS
from aglora.settings import check_range, setting

DEFAULT_METHODS = ["ag_lora", "plain_lora", "random_lora", "full_gd", "full_npo"]
KNOWN_METHODS = tuple(METHODS)  # the shared registry (its names need no torch)


@dataclass
class ImplantConfig:
    epochs: int = setting(5, "epochs of the implant fine-tune (full and retain models)")
    lr: float = setting(1e-4, "learning rate of the implant fine-tune")
    batch_size: int = setting(16, "sequences per implant step")
    weight_decay: float = setting(0.0, "AdamW weight decay of the implant fine-tune")
    warmup_steps: int = setting(3, "linear warm-up steps of the implant fine-tune")
    seed: int = setting(0, "seed of the implant fine-tune")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise AgloraError(f"implant settings {asdict(self)}: epochs and batch_size must be "
                              ">= 1 and lr > 0")
        check_range("implant.weight_decay", self.weight_decay, 0)
        check_range("implant.warmup_steps", self.warmup_steps, 0)


@dataclass
class MethodSettings:
    steps: int = setting(10, "unlearning steps, the same for every method")
    batch_size: int = setting(8, "forget and retain sequences per step")
    lora_lr: float = setting(1e-2, "learning rate of the LoRA methods (the demo's)")
    full_lr: float = setting(1e-4, "learning rate of the full-parameter methods and RMU")
    rank: int = setting(8, "LoRA rank")
    k: int = setting(128, "ag_lora: neurons in the mask")
    npo_beta: float = setting(0.5, "NPO beta")
    lora_retain_weight: float = setting(10.0, "retain weight of the LoRA methods (KL)")
    full_retain_weight: float = setting(1.0, "retain weight of the full-parameter methods (NLL)")
    record_retain: int = setting(48, "retain items recorded against the forget items for the "
                                     "activation-guided scores")
    seed: int = setting(0, "training seed")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.k < 1 or self.rank < 1:
            raise AgloraError("method settings: steps, batch_size, k and rank must be >= 1")
        for name in ("lora_lr", "full_lr", "npo_beta"):
            check_range(f"method.{name}", getattr(self, name), 0, low_open=True)
        for name in ("lora_retain_weight", "full_retain_weight", "record_retain"):
            check_range(f"method.{name}", getattr(self, name), 0)


@dataclass
class ControlledConfig:
    seed: int = setting(0, "catalogue and training seed")
    n_films: int = setting(20, "films in the catalogue")
    n_forget: int = setting(2, "films to unlearn")
    methods: list[str] = setting(list(DEFAULT_METHODS), "methods compared")
    fq_wording: str = setting("both", "forget-set probes for forget quality: question | "
                                      "paraphrase | both")
    utility_films: int = setting(6, "retain films evaluated for model utility (both wordings)")
    real_world_limit: int = setting(20, "TOFU world-facts / real-authors probes per file")
    eval_batch_size: int = setting(16, "sequences per evaluation batch")
    implant: ImplantConfig = field(default_factory=ImplantConfig)
    method: MethodSettings = field(default_factory=MethodSettings)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown or not self.methods:
            raise AgloraError(f"unknown method(s) {unknown or self.methods}; choose from "
                              f"{', '.join(KNOWN_METHODS)}")
        check_range("real_world_limit", self.real_world_limit, 0, fix="--real-world: 0 = none")
        check_range("eval_batch_size", self.eval_batch_size, 1)
        check_range("seed", self.seed, 0)
        if self.fq_wording not in ("question", "paraphrase", "both"):
            raise AgloraError(f"fq_wording={self.fq_wording!r}: use question, paraphrase or both")
        if self.utility_films < 1 or self.utility_films > self.n_films - self.n_forget:
            raise AgloraError(f"utility_films={self.utility_films}: must be between 1 and the "
                              f"number of retain films ({self.n_films - self.n_forget})")
