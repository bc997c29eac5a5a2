"""`aglora check` and `aglora new-concept`: writing a concept the base model actually knows."""

from __future__ import annotations

import argparse
from pathlib import Path

from aglora.errors import AgloraError
from aglora.runtime.format import fmt


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from aglora.authoring.check import DEFAULT_MIN_MARGIN
    p = sub.add_parser("check", help="which items of concept specs or probe files the base model "
                                     "knows (likelihood choice, margin, greedy answer)")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="concept spec YAML (its training items and probe files; builtin:NAME "
                        "works too) or probe JSONL")
    p.add_argument("--model", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--min-margin", type=float, default=DEFAULT_MIN_MARGIN, metavar="NATS",
                   help="known = the answer beats the best distractor by at least this many "
                        f"nats (default {DEFAULT_MIN_MARGIN})")
    p.add_argument("--no-generate", action="store_true",
                   help="skip the greedy answers (faster)")
    p.add_argument("--write-known", metavar="OUT.jsonl",
                   help="write the known items to this probe file")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser("new-concept", help="write a commented skeleton concept spec, training "
                                           "items and probe file")
    p.add_argument("name", help="the concept's name, e.g. 'The Beatles'")
    p.add_argument("--dir", default="concepts", help="folder to write into (default concepts/)")
    p.add_argument("--force", action="store_true", help="overwrite existing skeleton files")
    p.set_defaults(handler=cmd_new_concept)


def _short(text: str | None, n: int = 60) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def cmd_check(args: argparse.Namespace) -> None:
    from aglora.authoring.check import check_items, items_of, summary, write_known
    from aglora.config import ModelConfig
    from aglora.model.load import load_model
    items = [it for f in args.files for it in items_of(f)]  # every file parsed before loading
    if not items:
        raise AgloraError("no items to check in " + ", ".join(args.files))
    model, tok = load_model(ModelConfig(name_or_path=args.model))
    checks = check_items(model, tok, items, args.min_margin, not args.no_generate)
    if not args.quiet:
        for c in checks:
            mark = "known" if c.known else ("no options" if c.margin is None else "unknown")
            print(f"{mark:<10} {fmt(c.margin):>7}  {c.probe.key:<28} "
                  f"{_short(c.probe.prompt, 50):<50}  answer {_short(c.probe.answer, 24)!r}"
                  + (f"  says {_short(c.greedy)!r}" if c.greedy is not None else ""))
    print(f"\nknown = answer beats every distractor by >= {args.min_margin} nats")
    print(f"{'group':<32} {'items':>5} {'with options':>12} {'known':>5} {'share':>6}")
    for row in summary(checks):
        print(f"{row['group']:<32} {row['n']:>5} {row['n_choice']:>12} {row['n_known']:>5} "
              f"{fmt(row['known_share']):>6}")
    if args.write_known:
        n = write_known(checks, Path(args.write_known))
        print(f"[aglora] wrote {n} known items to {args.write_known}")


def cmd_new_concept(args: argparse.Namespace) -> None:
    from aglora.authoring.skeleton import write_skeleton
    for path in write_skeleton(args.name, Path(args.dir), args.force):
        print(f"[aglora] wrote {path}")
