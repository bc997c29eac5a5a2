"""Run configuration: dataclasses with help text, YAML in, dotted CLI overrides.

A run is described by one `RunConfig`. Every field has a default and a help string; the resolved
configuration (every default written out) is saved as `config.yaml` in the run directory, so a run
can be reproduced from that file alone. Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aglora.errors import AgloraError

MLP_MODULES = ("down_proj", "gate_proj", "up_proj")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    name_or_path: str | None = _f(None, "Hugging Face id, local directory or .gguf file; "
                                        "empty = the embedded SmolLM2-135M-Instruct")
    gguf_file: str | None = _f(None, "GGUF file name inside name_or_path (when it is a directory)")
    dtype: str = _f("float32", "float32 | bfloat16 | float16")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    trust_remote_code: bool = _f(False, "allow model code from the model directory (unsafe)")

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise AgloraError(f"model.dtype={self.dtype!r}: use float32, bfloat16 or float16")


@dataclass
class ScoreConfig:
    scorer: str = _f("ratio", "how forget/retain statistics combine into one score per neuron: "
                              "ratio | rank | contrast | saliency | random")
    eps: float = _f(1e-2, "relative epsilon in ratios (times the mean of the denominator)")
    retain_weight: float = _f(1.0, "lambda: weight of retain ranks in the 'rank' scorer")
    batch_size: int = _f(8, "sequences per forward/backward pass while recording")


@dataclass
class MaskConfig:
    selection: str = _f("topk_global", "topk_global | topk_per_layer | fraction")
    k: int = _f(64, "neurons to select (global) or per layer (topk_per_layer)")
    fraction: float = _f(0.001, "share of all neurons to select when selection=fraction")
    seed: int = _f(0, "seed for the 'random' scorer")

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
    modules: list[str] = _f(["down_proj"], "MLP modules that get masked LoRA: "
                                           "down_proj (masked input columns), gate_proj, up_proj "
                                           "(masked output rows)")
    rank: int = _f(8, "LoRA rank r")
    alpha: float = _f(16.0, "LoRA alpha (scale = alpha / r)")
    masked: bool = _f(True, "confine the update to the selected neurons (False = plain LoRA on "
                            "the same layers)")
    all_layers: bool = _f(False, "put LoRA on every layer, not only layers holding selected "
                                 "neurons (with masked=False this is plain LoRA)")

    def __post_init__(self) -> None:
        bad = [m for m in self.modules if m not in MLP_MODULES]
        if bad or not self.modules:
            raise AgloraError(f"lora.modules={self.modules}: unknown module name(s) {bad}; "
                              f"choose from {list(MLP_MODULES)}")
        if self.rank < 1:
            raise AgloraError(f"lora.rank={self.rank}: must be at least 1")


@dataclass
class TrainConfig:
    forget_objective: str = _f("npo", "npo | grad_ascent | refusal | alternative | none")
    retain_objective: str = _f("kl", "kl | nll | kl+nll | none")
    retain_weight: float = _f(10.0, "alpha: loss = forget + alpha * retain")
    npo_beta: float = _f(0.5, "NPO beta")
    forget_others_kl: float = _f(0.0, "weight of a term that keeps, at the forget answer's "
                                      "tokens, the base model's distribution over all other "
                                      "tokens (npo / grad_ascent): the answer is lowered without "
                                      "moving what else the model would say there")
    forget_skip_leading: list[str] = _f([], "leading words of a forget answer that NPO and "
                                            "gradient ascent leave out of the pushed-down target "
                                            "(e.g. [The]: push down 'Matrix' after 'The', not "
                                            "the article that starts many other answers)")
    lr: float = _f(1e-3, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    batch_size: int = _f(8, "forget and retain sequences per step (each)")
    max_steps: int = _f(40, "hard cap on optimisation steps")
    min_steps: int = _f(3, "steps before early stopping may trigger")
    stop_accuracy: float | None = _f(None, "stop when likelihood-choice accuracy on the training "
                                           "forget items is <= this (default: chance)")
    stop_margin: float = _f(0.0, "...and their mean margin (answer - best distractor, nats) "
                                 "<= this")
    stop_each_answer: bool = _f(False, "early stopping needs every answer's forget items at "
                                       "the goal on their own, not only all items on average")
    focus_lagging_answers: bool = _f(False, "at each check, forget batches draw only from "
                                            "answers not yet at the goal (all, once every "
                                            "answer is): the steps go to the title that lags, "
                                            "and a title at chance is not pushed further")
    forget_weight_at_goal: float = _f(1.0, "weight of the forget term (npo / grad_ascent) on "
                                           "items whose answer no longer beats every "
                                           "distractor at the last check; below 1 the steps "
                                           "go to the items that lag (one title of several, "
                                           "the prompts where it holds on)")
    check_every: int = _f(1, "steps between early-stopping checks")
    seed: int = _f(0, "seed for batching and initialisation")

    def __post_init__(self) -> None:
        if self.forget_weight_at_goal < 0:
            raise AgloraError(f"train.forget_weight_at_goal={self.forget_weight_at_goal}: must "
                              "be 0 or more (1 = every forget item weighs the same)")


@dataclass
class EvalConfig:
    n_samples: int = _f(2, "sampled generations per probe, besides the greedy one")
    sample_splits: list[str] = _f(["forget"], "splits whose probes get the sampled generations "
                                              "(the others: greedy only)")
    temperature: float = _f(0.7, "sampling temperature")
    max_new_tokens: int = _f(32, "tokens generated per probe")
    batch_size: int = _f(16, "sequences per batch in likelihood scoring (and generation, unless "
                             "generate_batch_size is set)")
    generate_batch_size: int = _f(0, "rows decoded together in generation (0 = batch_size); "
                                     "decoding one token per row uses the CPU better in "
                                     "larger batches than scoring does")
    include_tofu: bool = _f(True, "add the TOFU world-facts and real-authors utility probes")
    tofu_limit: int = _f(0, "use at most this many TOFU probes per file (0 = all)")
    relearn_steps: int = _f(0, "steps of the relearning attack (0 = off)")
    cache_base: bool = _f(True, "keep the base model's measurements in the cache folder, keyed "
                                "by its weights, the probes and these settings (reruns measure "
                                "only the adapter side)")
    parallel_sides: bool = _f(True, "on a CPU with 2+ threads, measure the base and the adapter "
                                    "side at once, each on half the threads (1.2x faster on 2 "
                                    "cores; results differ only by float rounding)")
    seed: int = _f(0, "seed for sampling")


@dataclass
class RunConfig:
    name: str = _f("run", "run name")
    concept: str = _f("builtin:inception", "concept spec YAML (or builtin:NAME)")
    model: ModelConfig = field(default_factory=ModelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = _f(0, "global seed")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AgloraError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise AgloraError(f"config key '{key}': expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise AgloraError(f"config key '{key}': expected true/false, got {value!r}")
    if tp in (int, float):
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise AgloraError(f"config key '{key}': expected a number, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise AgloraError(f"config key '{key}': expected an integer, got {value!r}")
        return out
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise AgloraError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AgloraError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: "
                          f"{', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise AgloraError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=5e-4")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AgloraError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AgloraError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AgloraError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AgloraError(f"{path}: expected a YAML mapping at the top level")
    return data


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
