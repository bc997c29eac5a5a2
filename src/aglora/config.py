"""Run configuration: dataclasses with help text, YAML in, dotted CLI overrides.

A run is described by one `RunConfig`. Every field has a default and a help string; the resolved
configuration (every default written out) is saved as `config.yaml` in the run directory, so a run
can be reproduced from that file alone. Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aglora.errors import AgloraError
from aglora.settings import apply_overrides, build, check_range, load_yaml, setting

MLP_MODULES = ("down_proj", "gate_proj", "up_proj")
EVAL_SPLITS = ("forget", "neighbor", "utility")  # = aglora.concepts.SPLITS (a sibling module)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class ModelConfig:
    name_or_path: str | None = setting(
        None,
        "Hugging Face id, local directory or .gguf file; empty = the embedded "
        "SmolLM2-135M-Instruct")
    gguf_file: str | None = setting(
        None, "GGUF file name inside name_or_path (when it is a directory)")
    dtype: str = setting("float32", "float32 | bfloat16 | float16")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    trust_remote_code: bool = setting(False, "allow model code from the model directory (unsafe)")

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise AgloraError(f"model.dtype={self.dtype!r}: use float32, bfloat16 or float16")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise AgloraError(f"model.device={self.device!r}: unknown device; use auto, cpu, "
                              "cuda, cuda:N or mps")


@dataclass
class ScoreConfig:
    scorer: str = setting(
        "ratio",
        "how forget/retain statistics combine into one score per neuron: ratio | rank | contrast |"
        " saliency | random")
    eps: float = setting(1e-2, "relative epsilon in ratios (times the mean of the denominator)")
    retain_weight: float = setting(1.0, "lambda: weight of retain ranks in the 'rank' scorer")
    batch_size: int = setting(8, "sequences per forward/backward pass while recording")

    def __post_init__(self) -> None:
        check_range("score.eps", self.eps, 0, low_open=True)
        check_range("score.retain_weight", self.retain_weight, 0)
        check_range("score.batch_size", self.batch_size, 1)


@dataclass
class MaskConfig:
    selection: str = setting("topk_global", "topk_global | topk_per_layer | fraction")
    k: int = setting(64, "neurons to select (global) or per layer (topk_per_layer)")
    fraction: float = setting(0.001, "share of all neurons to select when selection=fraction")
    seed: int = setting(0, "seed for the 'random' scorer")

    def __post_init__(self) -> None:
        if self.selection not in ("topk_global", "topk_per_layer", "fraction"):
            raise AgloraError(f"mask.selection={self.selection!r}: use topk_global, "
                              "topk_per_layer or fraction")
        if self.k < 1:
            raise AgloraError(f"mask.k={self.k}: must be at least 1")
        if not 0 < self.fraction <= 1:
            raise AgloraError(f"mask.fraction={self.fraction}: must be in (0, 1]")


@dataclass
class LoraConfig:
    modules: list[str] = setting(
        ["down_proj"],
        "MLP modules that get masked LoRA: down_proj (masked input columns), gate_proj, up_proj "
        "(masked output rows)")
    rank: int = setting(8, "LoRA rank r")
    alpha: float = setting(16.0, "LoRA alpha (scale = alpha / r)")
    masked: bool = setting(
        True, "confine the update to the selected neurons (False = plain LoRA on the same layers)")
    all_layers: bool = setting(
        False,
        "put LoRA on every layer, not only layers holding selected neurons (with masked=False this"
        " is plain LoRA)")

    def __post_init__(self) -> None:
        bad = [m for m in self.modules if m not in MLP_MODULES]
        if bad or not self.modules:
            raise AgloraError(f"lora.modules={self.modules}: unknown module name(s) {bad}; "
                              f"choose from {list(MLP_MODULES)}")
        if self.rank < 1:
            raise AgloraError(f"lora.rank={self.rank}: must be at least 1")
        check_range("lora.alpha", self.alpha, 0, low_open=True, fix="scale = alpha / rank")


FORGET_OBJECTIVES = ("npo", "grad_ascent", "none")
FORGET_RESPONSES = ("suppress", "refuse", "alternative")


def check_response(objective: str, response: str) -> None:
    """Refuse an unknown forget objective or response, and say where the old replacement
    objectives went."""
    if objective in ("refusal", "alternative"):
        new = "refuse" if objective == "refusal" else "alternative"
        raise AgloraError(f"train.forget_objective={objective}: the replacement answer is set by "
                          f"train.forget_response now; use forget_response: {new} (with "
                          "forget_objective: none to train the replacement alone)")
    if objective not in FORGET_OBJECTIVES:
        raise AgloraError(f"unknown train.forget_objective {objective!r}; choose from "
                          f"{', '.join(FORGET_OBJECTIVES)}")
    if response not in FORGET_RESPONSES:
        raise AgloraError(f"unknown train.forget_response {response!r}; choose from "
                          f"{', '.join(FORGET_RESPONSES)}")


@dataclass
class TrainConfig:
    forget_objective: str = setting(
        "npo", "the loss that lowers the concept's answers: npo | grad_ascent | none")
    forget_response: str = setting(
        "suppress",
        "what the model learns to say instead: suppress (only lower the answer) | refuse (also "
        "learn a refusal after the chat questions) | alternative (also learn another answer: the "
        "spec's alternatives, else the item's distractors)")
    response_weight: float = setting(
        1.0, "weight of the refusal or alternative term (forget_response refuse | alternative)")
    refusal_contrast: float = setting(
        0.3,
        "with forget_response refuse: weight of the term that keeps a refusal no likelier than "
        "in the base model after the retain items' chat questions (NPO on the refusal there; "
        "inside the retain term, so retain_weight scales it too; 0 = off)")
    retain_objective: str = setting("kl", "kl | nll | kl+nll | none")
    retain_weight: float = setting(10.0, "alpha: loss = forget + alpha * retain")
    npo_beta: float = setting(0.5, "NPO beta")
    npo_reference: str = setting(
        "base",
        "NPO's reference log-probability of a forget answer: base (the base model's) | "
        "distractors (the base model's, less the item's base margin over its best distractor: "
        "the push is at full strength until the answer falls to its distractors, whatever its "
        "lead in the base model, and fades past them; items without distractors keep base)")
    forget_others_kl: float = setting(
        0.0,
        "weight of a term that keeps, at the forget answer's tokens, the base model's distribution"
        " over the other tokens, those no forget answer puts there after the same context (npo /"
        " grad_ascent): the answers are lowered without moving what else the model would say "
        "there")
    forget_skip_leading: list[str] = setting(
        [],
        "leading words of a forget answer that NPO and gradient ascent leave out of the "
        "pushed-down target (e.g. [The]: push down 'Matrix' after 'The', not the article that "
        "starts many other answers)")
    forget_name_weight: float = setting(
        0.0,
        "weight of the name misdirection term: the representation after the deepest masked "
        "layer, at the concept's name tokens in the forget items, moved towards a fixed random "
        "direction (aglora.pipeline.train.misdirect; 0 = off)")
    forget_name_shift: float = setting(
        1.0, "length of that move, in units of each name position's own representation norm")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    batch_size: int = setting(8, "forget and retain sequences per step (each)")
    max_steps: int = setting(40, "hard cap on optimisation steps")
    min_steps: int = setting(3, "steps before early stopping may trigger")
    stop_accuracy: float | None = setting(
        None,
        "stop when likelihood-choice accuracy on the training forget items is <= this (default: "
        "chance)")
    stop_margin: float = setting(
        0.0, "...and their mean margin (answer - best distractor, nats) <= this")
    stop_each_answer: bool = setting(
        False,
        "early stopping needs every answer's forget items at the goal on their own, not only all "
        "items on average")
    focus_lagging_answers: bool = setting(
        False,
        "at each check, forget batches draw only from answers not yet at the goal (all, once every"
        " answer is): the steps go to the title that lags, and a title at chance is not pushed "
        "further")
    forget_weight_at_goal: float = setting(
        1.0,
        "weight of the forget term (npo / grad_ascent) on items whose answer no longer beats every"
        " distractor at the last check; below 1 the steps go to the items that lag (one title of "
        "several, the prompts where it holds on)")
    pair_shared_answers: bool = setting(
        False,
        "for every forget item of a step whose answer a retain item also has (the same film's "
        "director answering for his other films), the retain batch adds one such retain item "
        "(drawn in turn): the answer pushed down in the concept's context is held in the "
        "neighbours' in the same step, however few retain items share it")
    batch_by_context: bool = setting(
        False,
        "the forget batch of a step is whole contexts (prompt and prefix) with every forget item "
        "on each, drawn until it holds batch_size items per answer: a ban's titles share their "
        "list prompts, so each step pushes every title down and runs each shared prompt once; "
        "off: batch_size items")
    check_every: int = setting(1, "steps between early-stopping checks")
    check_items_per_answer: int = setting(
        0,
        "items of each answer an early-stopping check scores: a fixed seeded subset, the same "
        "contexts for every answer (zero: every item)")
    check_incremental: bool = setting(
        False,
        "with stop_each_answer: a check rescores only the answers not yet at the goal, and the "
        "others once more before a stop is declared (the stop step of a full check)")
    check_final_full: bool = setting(
        False,
        "after the last step, score every training choice item once and record it in "
        "train_history.json (what the full check says where a subset stopped)")
    augment: bool = setting(
        False,
        "train on the forget and retain items in more forms too (role-play wrappers, multiple "
        "choice, fill in the blank, misspelled name, another language, plain completion, the "
        "concept as the answer to its description): aglora.pipeline.augment")
    validation_share: float = setting(
        0.0,
        "share of the training items (with all their forms) held out as a validation split; "
        "early stopping then reads it instead of the training items (0 = off)")
    stop_retain_accuracy: float | None = setting(
        None,
        "with a validation split: also stop once the held-out retain items the base model knows "
        "fall below this likelihood-choice accuracy (the neighbours' guard; empty = off)")
    stop_each_form: bool = setting(False, "stopping needs each form (family) at the goal too")
    stop_refusal_share: float = setting(
        0.8,
        "with forget_response refuse: early stopping also needs at least this share of the "
        "greedy answers to the checked chat forget items (the validation split's, else the "
        "training items) to be refusals, by the evaluation's refusal classifier (0 = off)")
    disruption_mask: bool = setting(
        False,
        "the forget term moves a LoRA weight entry only where its gradient's sign agrees with "
        "the (accumulated) retain gradient's (MUDMAN's disruption masking; "
        "aglora.pipeline.train.disruption)")
    disruption_momentum: float = setting(
        0.9, "momentum of the retain-gradient average the disruption mask compares with")
    sharpness_radius: float = setting(
        0.0,
        "sharpness-aware forgetting: the forget gradient is taken at the worst weights this "
        "far away, in units of one AdamW step's norm (lr x sqrt(entries reached); "
        "aglora.pipeline.train.sharpness; 0 = off)")
    seed: int = setting(0, "seed for batching and initialisation")

    def __post_init__(self) -> None:
        if self.forget_weight_at_goal < 0:
            raise AgloraError(f"train.forget_weight_at_goal={self.forget_weight_at_goal}: must "
                              "be 0 or more (1 = every forget item weighs the same)")
        check_range("train.lr", self.lr, 0, low_open=True)
        check_response(self.forget_objective, self.forget_response)
        for name in ("retain_weight", "forget_others_kl", "weight_decay", "min_steps",
                     "response_weight", "refusal_contrast", "check_items_per_answer"):
            check_range(f"train.{name}", getattr(self, name), 0)
        check_range("train.npo_beta", self.npo_beta, 0, low_open=True)
        if self.npo_reference not in ("base", "distractors"):
            raise AgloraError(f"train.npo_reference={self.npo_reference!r}: must be base or "
                              "distractors")
        for name in ("batch_size", "max_steps", "check_every"):
            check_range(f"train.{name}", getattr(self, name), 1)
        check_range("train.stop_margin", self.stop_margin)
        check_range("train.disruption_momentum", self.disruption_momentum, 0, 1,
                    high_open=True, fix="0 = this step's retain gradient alone")
        check_range("train.sharpness_radius", self.sharpness_radius, 0, fix="0 = off")
        if self.sharpness_radius > 0 and self.disruption_mask:
            raise AgloraError("train.sharpness_radius and train.disruption_mask both set: they "
                              "are two rules for the same gradient; turn one off")
        if self.min_steps > self.max_steps:
            raise AgloraError(f"train.min_steps={self.min_steps} exceeds train.max_steps="
                              f"{self.max_steps}: lower min_steps or raise max_steps")
        if self.stop_accuracy is not None:
            check_range("train.stop_accuracy", self.stop_accuracy, 0, 1,
                        fix="an accuracy; leave it out for chance")
        check_range("train.validation_share", self.validation_share, 0, 1, high_open=True,
                    fix="0 = no validation split")
        check_range("train.stop_refusal_share", self.stop_refusal_share, 0, 1,
                    fix="a share of answers; 0 = off")
        if self.stop_retain_accuracy is not None:
            check_range("train.stop_retain_accuracy", self.stop_retain_accuracy, 0, 1,
                        fix="an accuracy; leave it out to turn the guard off")


@dataclass
class EvalConfig:
    n_samples: int = setting(2, "sampled generations per probe, besides the greedy one")
    sample_splits: list[str] = setting(["forget"], "splits with sampled generations too")
    generate_splits: list[str] = setting(
        ["forget", "neighbor", "utility"],
        "splits with generations: forget (leaks, what is said instead), neighbor (fluency, "
        "over-refusal), utility (over-refusal)")
    temperature: float = setting(0.7, "sampling temperature")
    max_new_tokens: int = setting(32, "tokens generated per probe")
    batch_size: int = setting(
        16,
        "sequences per batch in likelihood scoring (and generation, unless generate_batch_size is "
        "set)")
    generate_batch_size: int = setting(
        0,
        "rows decoded together in generation (0 = batch_size); decoding one token per row uses the"
        " CPU better in larger batches than scoring does")
    include_tofu: bool = setting(True, "add the TOFU world-facts and real-authors utility probes")
    tofu_limit: int = setting(0, "use at most this many TOFU probes per file (0 = all)")
    relearn_steps: int = setting(0, "steps of the relearning attack (0 = off); one more "
                                    "checkpoint of relearn_curve")
    relearn_curve: list[int] = setting(
        [],
        "checkpoints (steps) of the relearning attack: one continued fine-tune on a quarter of "
        "the known forget facts, the others scored at each (empty = off)")
    relearn_benign: bool = setting(
        False,
        "with checkpoints: also the benign attack, a fine-tune on the neighbour and utility "
        "probes' answers only, every known forget fact scored at each checkpoint")
    relearn_in_context: bool = setting(
        False,
        "also the in-context attack: the attack quarter's facts in the prompt of the others")
    cache_base: bool = setting(True, "cache the base side, keyed by weights, probes, settings")
    parallel_sides: bool = setting(True, "base and after sides at once, on half the threads each")
    seed: int = setting(0, "seed for sampling")

    def __post_init__(self) -> None:
        for name in ("n_samples", "generate_batch_size", "tofu_limit", "relearn_steps"):
            check_range(f"eval.{name}", getattr(self, name), 0)
        for name in ("max_new_tokens", "batch_size"):
            check_range(f"eval.{name}", getattr(self, name), 1)
        for k in self.relearn_curve:
            check_range("eval.relearn_curve", k, 1, fix="steps of a checkpoint; [] = off")
        check_range("eval.temperature", self.temperature, 0, low_open=True)
        for key in ("sample_splits", "generate_splits"):
            value = getattr(self, key)
            bad = [s for s in value if s not in EVAL_SPLITS]
            if bad:
                raise AgloraError(f"eval.{key}={value}: unknown split {bad[0]!r}; choose from "
                                  f"{', '.join(EVAL_SPLITS)}")


@dataclass
class RunConfig:
    name: str = setting("run", "run name")
    concept: str = setting("builtin:inception", "concept spec YAML (or builtin:NAME)")
    model: ModelConfig = field(default_factory=ModelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = setting(0, "global seed")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return build(RunConfig, data)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or none: all defaults), apply dotted overrides, validate."""
    data = load_yaml(path) if path else {}
    if path and isinstance(data.get("concept"), str):
        concept = data["concept"]
        if not concept.startswith("builtin:") and not Path(concept).is_absolute():
            data["concept"] = str((Path(path).parent / concept).resolve())
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


FORGET_CONFIG = Path(__file__).parent / "data" / "configs" / "forget.yaml"


def forget_config(spec: str, model: str | None = None,
                  overrides: list[str] | None = None) -> RunConfig:
    """The recommended settings (`FORGET_CONFIG`) for concept spec `spec`
    (a path or `builtin:NAME`), with the model and `KEY=VALUE` overrides applied."""
    concept = spec if spec.startswith("builtin:") else str(Path(spec).resolve())
    name = spec.split(":", 1)[1] if spec.startswith("builtin:") else Path(spec).stem
    pre = [f"name={name}", f"concept={concept}"]
    if model:
        pre.append(f"model.name_or_path={model}")
    return load_config(FORGET_CONFIG, [*pre, *(overrides or [])])
