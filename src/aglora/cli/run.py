"""`aglora run`, `demo`, the stage subcommands and `eval`."""

from __future__ import annotations

import argparse
from pathlib import Path

from aglora.cli.summary import print_summary
from aglora.errors import AgloraError
from aglora.runtime.artifacts import read_json
from aglora.runtime.processes import is_main

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "configs" / "demo.yaml"
STAGE_HELP = (("record", "record neuron activations and gradients"),
              ("score", "combine recorded statistics into neuron scores"),
              ("mask", "select neurons by score"),
              ("train", "train the masked LoRA adapter"),
              ("report", "write report.md and report.html"))
# The commands that run under `accelerate launch` (docs/scale-out.md).
LAUNCHABLE = ("run", "forget", "demo", *(stage for stage, _ in STAGE_HELP))


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=5e-4 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an output directory that holds another run")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run all stages of a config (resumes unfinished runs)")
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--until", choices=["record", "score", "mask", "train", "eval", "report"],
                   help="stop after this stage")
    common(p)
    p.set_defaults(handler=lambda a: cmd_run(a, a.config))

    p = sub.add_parser("forget", help="forget a concept spec with the recommended settings "
                                      "(no config file needed)")
    p.add_argument("spec", help="concept spec YAML (or builtin:NAME)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--model", help="base model: Hugging Face id, local directory or .gguf file "
                                   "(default: the embedded SmolLM2-135M-Instruct)")
    common(p)
    p.set_defaults(handler=cmd_forget)

    p = sub.add_parser("suite", help="the recommended settings on several concepts: one table "
                                     "and a figure")
    p.add_argument("--concepts", help="comma-separated concept specs or builtin:NAME (default: "
                                      "the shipped suite)")
    p.add_argument("--out", required=True, help="output directory (one run directory each)")
    p.add_argument("--model", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--title", default="Concept suite", help="title of suite.md")
    common(p)
    p.set_defaults(handler=cmd_suite)

    p = sub.add_parser("demo", help="forget 'Inception' on the embedded SmolLM2 model")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    common(p)
    p.set_defaults(handler=lambda a: cmd_run(a, str(DEMO_CONFIG)))

    for stage, text in STAGE_HELP:
        p = sub.add_parser(stage, help=text)
        p.add_argument("run_dir", help="run directory")
        p.add_argument("--config", help="config YAML to start the run with (else the one saved "
                                        "in the run directory)")
        common(p)
        p.set_defaults(handler=cmd_stage)

    p = sub.add_parser("eval", help="evaluate probe files on a model, with or without adapter")
    p.add_argument("run_dir", nargs="?", help="run directory: run its eval stage")
    p.add_argument("--adapter", help="run directory or adapter directory to evaluate")
    p.add_argument("--probes", action="append", default=[], help="probe JSONL file (repeatable)")
    p.add_argument("--base", help="base model (default: the adapter's, else the embedded model)")
    p.add_argument("--out", help="output directory for metrics.json (standalone mode)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip malformed probe lines (and count them) instead of failing")
    p.add_argument("--tofu", action="store_true", help="add the TOFU utility probes")
    p.add_argument("--samples", type=int, default=None, help="sampled generations per probe")
    p.add_argument("--relearn", default="0", metavar="K[,K2,...]",
                   help="relearning attack: fine-tune on a quarter of the forget facts, scored "
                        "after K steps (or at each checkpoint of a list: a curve)")
    p.add_argument("--backend", default="torch", metavar="{torch,llama.cpp}",
                   help="llama.cpp: the same metrics through llama-cpp-python on GGUF files "
                        "(greedy generations only); with --adapter also its agreement with "
                        "PyTorch")
    p.add_argument("--gguf-base", metavar="BASE.gguf", help="llama.cpp: the base model's GGUF")
    p.add_argument("--gguf-lora", metavar="ADAPTER.gguf",
                   help="llama.cpp: the after side is the base GGUF with this LoRA GGUF "
                        "(aglora export --format gguf-lora)")
    p.add_argument("--gguf-merged", metavar="MERGED.gguf",
                   help="llama.cpp: the after side is this merged GGUF (aglora export --format "
                        "gguf)")
    common(p)
    p.set_defaults(handler=cmd_eval)


def _open(cfg, out: Path, force: bool):
    from aglora.pipeline.run import open_run
    from aglora.recommend.ban import REPORT_SECTIONS
    # check=True: the concept spec, its probe files, the device, before any model loads and
    # before anything in `out` is written or deleted
    ctx = open_run(cfg, out, force=force, check=True)
    ctx.report_sections = REPORT_SECTIONS
    return ctx


def _reopen(run_dir: Path):
    from aglora.pipeline.run import reopen_run
    from aglora.recommend.ban import REPORT_SECTIONS
    ctx = reopen_run(run_dir)
    ctx.report_sections = REPORT_SECTIONS
    return ctx


def _run_all(cfg, out: Path, force: bool, until: str | None = None) -> None:
    """Every unfinished stage of `cfg` into `out`, then the summary."""
    from aglora.pipeline.run import run_all
    run_all(_open(cfg, out, force), until=until)
    if not is_main():
        return
    if (out / "metrics.json").is_file():
        print_summary(read_json(out / "metrics.json"))
    print(f"[aglora] run directory: {out}")


def cmd_run(args: argparse.Namespace, config: str) -> None:
    from aglora.config import load_config
    cfg = load_config(config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    _run_all(cfg, out, args.force, getattr(args, "until", None))


def cmd_forget(args: argparse.Namespace) -> None:
    from aglora.config import forget_config
    _run_all(forget_config(args.spec, args.model, args.overrides), Path(args.out), args.force)


def cmd_suite(args: argparse.Namespace) -> None:
    from aglora.suite.run import SUITE, run_suite
    from aglora.suite.table import write_suite
    concepts = ([c.strip() for c in args.concepts.split(",") if c.strip()] if args.concepts
                else list(SUITE))
    rows = run_suite(concepts, Path(args.out), args.model, args.overrides, args.force)
    print(write_suite(rows, Path(args.out), args.title))
    print(f"[aglora] wrote {Path(args.out) / 'suite.md'}, suite.json, suite.png")


def cmd_stage(args: argparse.Namespace) -> None:
    from aglora.pipeline.run import check_inputs, run_stage
    run_dir = Path(args.run_dir)
    saved = run_dir / "config.yaml"
    if args.config or args.overrides:
        config = args.config or (str(saved) if saved.is_file() else None)
        from aglora.config import load_config
        ctx = _open(load_config(config, args.overrides), run_dir, args.force)
    else:
        ctx = _reopen(run_dir)
        check_inputs(ctx)
    run_stage(ctx, args.command)


def _checkpoints(text: str) -> list[int]:
    """--relearn K or K1,K2,...: the steps, checked by the evaluation (negative: refused)."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise AgloraError(f"--relearn {text}: expected steps, K or K1,K2,... (e.g. 5,10,20,50)"
                          ) from None
    if any(k < 0 for k in steps):
        raise AgloraError(f"--relearn {text}: must be 0 or more (steps of the attack)")
    return steps


def cmd_eval(args: argparse.Namespace) -> None:
    if args.samples is not None and args.samples < 0:
        raise AgloraError(f"--samples {args.samples}: must be 0 or more (sampled generations per "
                          "probe, besides the greedy one)")
    relearn = _checkpoints(args.relearn)
    if args.run_dir and not args.probes:
        from aglora.pipeline.run import check_inputs, run_stage
        if args.overrides:
            raise AgloraError("--set has no effect on a run's eval stage (it uses the run's saved "
                              "config); rerun the run with --set, or evaluate with --probes")
        ctx = _reopen(Path(args.run_dir))
        check_inputs(ctx)
        run_stage(ctx, "eval")
        print_summary(read_json(Path(args.run_dir) / "metrics.json"))
        return
    from aglora.pipeline.eval.standalone import evaluate_files
    if not args.probes:
        raise AgloraError("give at least one --probes FILE.jsonl (or a run directory)")
    if not args.out:
        raise AgloraError("give --out DIR for metrics.json")
    metrics = evaluate_files(args.probes, Path(args.out),
                             adapter=Path(args.adapter) if args.adapter else None,
                             base=args.base, skip_invalid=args.skip_invalid, tofu=args.tofu,
                             samples=args.samples, relearn=relearn,
                             overrides=args.overrides, backend=args.backend,
                             **{f"gguf_{k}": Path(v) if v else None for k, v in (
                                 ("base", args.gguf_base), ("lora", args.gguf_lora),
                                 ("merged", args.gguf_merged))})
    print_summary(metrics)
    for side, a in ((metrics.get("backend") or {}).get("agreement") or {}).items():
        print(f"llama.cpp vs PyTorch, {side}: top-1 next token agrees on "
              f"{a['top1_agreement']:.2f} of {a['n_contexts']} contexts; option log-probs "
              f"differ by {a['option_logprob_gap']:.3f} nats (mean |gap|); the choice agrees on "
              f"{a['choice_agreement']:.2f}")
