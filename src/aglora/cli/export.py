"""`aglora export`: argument parsing and output (light: no torch import until the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aglora.errors import AgloraError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `aglora export` subcommand."""
    p = sub.add_parser("export", help="write a run's adapter where it is served: a checked peft "
                                      "adapter, or a merged safetensors model")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding adapter/")
    # Formats and checks are validated by aglora.export (one error line), not argparse choices.
    p.add_argument("--format", required=True, metavar="{peft,merged}",
                   help="peft: the adapter as plain peft files, checked; merged: a full "
                        "safetensors model with the adapter folded in, plus its tokenizer")
    p.add_argument("--out", required=True, metavar="PATH", help="the export's directory")
    p.add_argument("--check", metavar="{vllm}",
                   help="peft: say whether vLLM would load the adapter and what to change if "
                        "not; nothing is written when it would not")
    p.add_argument("--max-lora-rank", type=int, metavar="N",
                   help="with --check vllm: the --max-lora-rank vLLM will run with (default: "
                        "the adapter's rank)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous export at PATH (only a folder holding "
                        "aglora-export.json)")
    p.set_defaults(handler=cli_main)


def cli_main(args: argparse.Namespace) -> None:
    from aglora.export.write import plan_export, write_export

    plan = plan_export(Path(args.run_dir), args.format, Path(args.out), force=args.force,
                       check=args.check, max_lora_rank=args.max_lora_rank)
    if plan.vllm is not None:
        for line in plan.vllm.lines(plan.serve_command()):
            print(line)
        if not plan.vllm.ok:
            raise AgloraError(f"vLLM would not load {plan.adapter.path} ("
                              f"{len(plan.vllm.problems)} problem(s) above); nothing written "
                              f"to {plan.out}")
    record = write_export(plan)
    print(f"wrote {plan.out} ({record['export']} export of {plan.run_dir}: "
          f"{', '.join(record['files'])}), rank {record['rank']} on "
          f"{len(record['target_modules'])} module(s)")
    if plan.fmt == "merged":
        print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(plan.out)!r})")
    else:
        print(f"load it with peft.PeftModel.from_pretrained(base_model, {str(plan.out)!r})")
