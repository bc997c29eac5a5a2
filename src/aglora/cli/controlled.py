"""`aglora controlled`: argument parsing (light: no torch import until the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aglora.controlled.settings import (
    DEFAULT_METHODS,
    ControlledConfig,
    ImplantConfig,
    MethodSettings,
)
from aglora.settings import build


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `aglora controlled` subcommand."""
    p = sub.add_parser("controlled", help="controlled track: TOFU's protocol (forget quality, "
                                          "model utility) on a seeded fictitious film catalogue")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--seed", type=int, default=0, help="catalogue and training seed")
    p.add_argument("--films", type=int, default=20, help="films in the catalogue")
    p.add_argument("--forget", type=int, default=2, help="films to unlearn")
    p.add_argument("--steps", type=int, default=MethodSettings.steps,
                   help="unlearning steps, the same for every method")
    p.add_argument("--k", type=int, default=MethodSettings.k, help="ag_lora: neurons in the mask")
    p.add_argument("--lora-lr", type=float, default=MethodSettings.lora_lr,
                   help="learning rate of the LoRA methods (ag_lora, plain_lora, random_lora)")
    p.add_argument("--full-lr", type=float, default=MethodSettings.full_lr,
                   help="learning rate of full_gd, full_npo and rmu")
    p.add_argument("--implant-epochs", type=int, default=ImplantConfig.epochs,
                   help="epochs of the implant fine-tune (full and retain models)")
    p.add_argument("--implant-lr", type=float, default=ImplantConfig.lr,
                   help="learning rate of the implant fine-tune")
    p.add_argument("--utility-films", type=int, default=6,
                   help="retain films evaluated for model utility")
    p.add_argument("--real-world", type=int, default=20,
                   help="TOFU real-authors / world-facts probes per file (0 = none)")
    p.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2)")
    p.add_argument("--cache", default=None, help="implant cache folder "
                                                 "(default ~/.cache/aglora/controlled)")
    p.set_defaults(handler=cli_main)


def config_from_args(args: argparse.Namespace) -> ControlledConfig:
    """The track's settings from the command line, checked by the settings toolkit."""
    return build(ControlledConfig, {
        "seed": args.seed, "n_films": args.films, "n_forget": args.forget,
        "methods": args.methods, "utility_films": args.utility_films,
        "real_world_limit": args.real_world,
        "implant": {"epochs": args.implant_epochs, "lr": args.implant_lr, "seed": args.seed},
        "method": {"steps": args.steps, "k": args.k, "lora_lr": args.lora_lr,
                   "full_lr": args.full_lr, "seed": args.seed}})


def cli_main(args: argparse.Namespace) -> None:
    from aglora.config import ModelConfig
    from aglora.controlled.catalogue import generate_catalogue as _gen
    from aglora.controlled.track import render_markdown, run_controlled
    from aglora.model.load import load_model

    cfg = config_from_args(args)
    _gen(cfg.seed, cfg.n_films, cfg.n_forget)  # validate before loading any model
    model_cfg = ModelConfig(name_or_path=args.model)
    summary = run_controlled(cfg, Path(args.out), lambda: load_model(model_cfg),
                             Path(args.cache) if args.cache else None)
    print(render_markdown(summary))
