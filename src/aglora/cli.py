"""Command-line interface: the `aglora` subcommands (stages, run, demo, eval, bench, ban, ...).

Every stage is a subcommand over one run directory. Input problems are printed as one line
(`aglora: error: ...`) with exit status 2; an interrupted run exits 130 and resumes when rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from aglora.errors import AgloraError

DEMO_CONFIG = Path(__file__).parent / "data" / "configs" / "demo.yaml"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=5e-4 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an output directory that holds another run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aglora", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run all stages of a config (resumes unfinished runs)")
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--until", choices=["record", "score", "mask", "train", "eval", "report"],
                   help="stop after this stage")
    _common(p)

    p = sub.add_parser("demo", help="forget 'Inception' on the embedded SmolLM2 model")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    _common(p)

    for stage, text in (("record", "record neuron activations and gradients"),
                        ("score", "combine recorded statistics into neuron scores"),
                        ("mask", "select neurons by score"),
                        ("train", "train the masked LoRA adapter"),
                        ("report", "write report.md and report.html")):
        p = sub.add_parser(stage, help=text)
        p.add_argument("run_dir", help="run directory")
        p.add_argument("--config", help="config YAML to start the run with (else the one saved "
                                        "in the run directory)")
        _common(p)

    p = sub.add_parser("bench", help="compare unlearning methods on one concept over seeds")
    p.add_argument("config", help="bench config YAML (e.g. src/aglora/data/configs/bench.yaml)")
    p.add_argument("--out", default="runs/bench", help="output directory (default runs/bench)")
    p.add_argument("--methods", help="comma-separated method names or labels (default: all in "
                                     "the config)")
    p.add_argument("--seeds", type=int, help="seeds per method (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a bench config value, e.g. --set run.train.max_steps=20")
    p.add_argument("--force", action="store_true", help="rerun finished cells")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; tabulate the finished cells")
    p.add_argument("--jobs", type=int, default=None,
                   help="cells run at once, in worker processes that share the CPU threads "
                        "(default: 2 on a CPU with at least 2 cores, else 1; see "
                        "docs/benchmarks.md)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

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
    p.add_argument("--relearn", type=int, default=0, metavar="K",
                   help="relearning attack: fine-tune K steps on a quarter of the forget facts")
    _common(p)

    from aglora.controlled.cli import add_parser as add_controlled
    add_controlled(sub)
    from aglora.recommend.show import add_parsers
    add_parsers(sub)  # ban, recommend
    return parser


def _load_cfg(config: str | None, overrides: list[str]):
    from aglora.config import load_config
    return load_config(config, overrides)


def cmd_run(args: argparse.Namespace, config: str) -> None:
    from aglora.pipeline import open_run, run_all
    cfg = _load_cfg(config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    ctx = open_run(cfg, out, force=args.force)
    _ = ctx.concept  # validate the concept spec before loading any model
    run_all(ctx, until=getattr(args, "until", None))
    if (out / "metrics.json").is_file():
        print_summary(json.loads((out / "metrics.json").read_text()))
    print(f"[aglora] run directory: {out}")


def cmd_stage(args: argparse.Namespace) -> None:
    from aglora.pipeline import open_run, reopen_run, run_stage
    run_dir = Path(args.run_dir)
    saved = run_dir / "config.yaml"
    if args.config or args.overrides:
        config = args.config or (str(saved) if saved.is_file() else None)
        ctx = open_run(_load_cfg(config, args.overrides), run_dir, force=args.force)
    else:
        ctx = reopen_run(run_dir)
    run_stage(ctx, args.command)


def cmd_eval(args: argparse.Namespace) -> None:
    if args.run_dir and not args.probes:
        from aglora.pipeline import reopen_run, run_stage
        ctx = reopen_run(Path(args.run_dir))
        run_stage(ctx, "eval")
        print_summary(json.loads((Path(args.run_dir) / "metrics.json").read_text()))
        return
    from aglora.standalone_eval import standalone_eval
    if not args.probes:
        raise AgloraError("give at least one --probes FILE.jsonl (or a run directory)")
    if not args.out:
        raise AgloraError("give --out DIR for metrics.json")
    metrics = standalone_eval(args)
    print_summary(metrics)


def _fmt(x) -> str:
    return "–" if x is None or x != x else f"{x:.2f}"


def print_summary(metrics: dict) -> None:
    rows = [("group", "n_known", "chance", "known acc base→after", "leak base→after")]
    for name, g in list(metrics["splits"].items()) + list(metrics.get("families", {}).items()):
        ka, lr = g["known_accuracy"], g["leak_rate"]
        rows.append((name, str(g["n_known"]), _fmt(g["chance"]),
                     f"{_fmt(ka['base'])} → {_fmt(ka['after'])}",
                     f"{_fmt(lr['base'])} → {_fmt(lr['after'])}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    d = metrics["distinct2"]
    print(f"distinct-2 {_fmt(d['base'])} → {_fmt(d['after'])}; KL(base‖model) neighbours "
          f"{metrics.get('kl_neighbor', float('nan')):.4f}")
    relearn = metrics.get("relearn")
    if relearn:
        ka = relearn["known_accuracy"]
        print(f"relearning attack: {relearn['steps']} steps on {relearn['n_train']} forget facts "
              f"bring the other {relearn['n_held']} from {_fmt(ka['after'])} back to "
              f"{_fmt(ka['relearned'])} known accuracy (base {_fmt(ka['base'])}): "
              f"{100 * relearn['recovered_share']:.0f} % of the gap recovered")
    verdict = metrics.get("verdict", {})
    if verdict.get("degenerate"):
        print("VERDICT: DEGENERATE — " + "; ".join(verdict["reasons"]))
    if "trainable_params" in metrics:
        print(f"trainable params {metrics['trainable_params']:,} "
              f"({100 * metrics['trainable_share']:.3f} % of base)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            cmd_run(args, args.config)
        elif args.command == "demo":
            cmd_run(args, str(DEMO_CONFIG))
        elif args.command == "bench":
            from aglora.bench import load_bench_config, run_bench
            from aglora.bench_workers import default_jobs
            from aglora.models import resolve_device
            jobs = args.jobs
            if jobs is None and not args.worker:
                model_cfg = load_bench_config(args.config, args.overrides).settings.run.model
                jobs = default_jobs(resolve_device(model_cfg.device), os.cpu_count())
            run_bench(args.config, Path(args.out), args.methods, args.seeds, args.overrides,
                      args.force, report_only=args.report_only, jobs=jobs or 1,
                      worker=args.worker)
        elif args.command == "eval":
            cmd_eval(args)
        elif args.command == "controlled":
            from aglora.controlled.cli import cli_main
            cli_main(args)
        elif args.command in ("ban", "recommend"):
            from aglora.recommend.show import run_command
            run_command(args)
        else:
            cmd_stage(args)
    except AgloraError as exc:
        print(f"aglora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aglora: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
