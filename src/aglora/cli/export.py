"""`aglora export`: argument parsing and output (light: no torch import until the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from aglora.errors import AgloraError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `aglora export` subcommand."""
    p = sub.add_parser("export", help="write a run's adapter where it is served: a checked peft "
                                      "adapter, a merged safetensors model, or GGUF for "
                                      "llama.cpp (the LoRA, or the merged model)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding adapter/")
    # Formats and checks are validated by aglora.export (one error line), not argparse choices.
    p.add_argument("--format", required=True, metavar="{peft,merged,gguf-lora,gguf}",
                   help="peft: the adapter as plain peft files, checked; merged: a full "
                        "safetensors model with the adapter folded in, plus its tokenizer; "
                        "gguf-lora: the adapter as a llama.cpp LoRA GGUF; gguf: the base GGUF "
                        "with the adapter merged in")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="the export's directory (peft, merged) or .gguf file (gguf-lora, gguf)")
    p.add_argument("--quant", metavar="{q8_0,q4_0,f16,...}",
                   help="gguf: the type of the merged weights (default q8_0; also f32, q5_1, "
                        "q5_0, q4_1)")
    p.add_argument("--gguf-base", metavar="BASE.gguf",
                   help="gguf-lora, gguf: the base model's GGUF (default: the run's model when it "
                        "is one, as the embedded model is); refused unless it is the adapter's "
                        "base")
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
                       check=args.check, max_lora_rank=args.max_lora_rank, quant=args.quant,
                       gguf_base=Path(args.gguf_base) if args.gguf_base else None)
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
    elif plan.fmt == "gguf-lora":
        print(f"serve it with: llama-cli -m {plan.gguf_base} --lora {plan.out}")
    elif plan.fmt == "gguf":
        fallback = record.get("f16_fallback") or []
        kept = (f", the output matrix {record['output_matrix']} {record['output_type']}"
                if record.get("output_type", "").lower() != plan.quant else "")
        print(f"{plan.quant} weights{kept}"
              + (f" ({len(fallback)} tensor(s) F16: rows not a multiple of the block size)"
                 if fallback else "")
              + f"; serve it with: llama-cli -m {plan.out}")
    else:
        print(f"load it with peft.PeftModel.from_pretrained(base_model, {str(plan.out)!r})")
