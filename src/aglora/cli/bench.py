"""`aglora bench`: compare unlearning methods on one concept over seeds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aglora.errors import AgloraError


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
                        "(default: 2 on a CPU with at least 2 cores, else 1)")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> None:
    from aglora.bench.config import load_bench_config
    from aglora.bench.pool import default_jobs
    from aglora.bench.run import run_bench
    from aglora.model.load import resolve_device
    jobs = args.jobs
    if jobs is not None and jobs < 1:
        raise AgloraError(f"--jobs {jobs}: need at least 1 (cells run at once)")
    if args.seeds is not None and args.seeds < 1:
        raise AgloraError(f"--seeds {args.seeds}: need at least 1")
    if jobs is None:
        model_cfg = load_bench_config(args.config, args.overrides).settings.run.model
        jobs = default_jobs(resolve_device(model_cfg.device), os.cpu_count())
    run_bench(args.config, Path(args.out), args.methods, args.seeds, args.overrides,
              args.force, report_only=args.report_only, jobs=jobs)
