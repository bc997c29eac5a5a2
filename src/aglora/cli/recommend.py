"""`aglora ban` and `aglora recommend`: recommender bans and their lists."""

from __future__ import annotations

import argparse
from pathlib import Path

from aglora.cli.summary import print_recommendation
from aglora.errors import AgloraError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ban", help="ban catalogue titles from the model's recommendations")
    p.add_argument("--item", action="append", default=[], metavar="TITLE",
                   help="a catalogue title to ban (repeatable: several titles, one adapter)")
    p.add_argument("--items-file", metavar="PATH",
                   help="a file of titles to ban, one per line (blank lines and # comments "
                        "skipped); with --item, both lists are banned")
    p.add_argument("--catalog", help="catalogue CSV (default: the shipped movie catalogue)")
    p.add_argument("--model", help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--combine-with", metavar="RUN_DIR",
                   help="another ban's run directory: load both adapters and report whether "
                        "they interfere")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (train.lr=5e-3, mask.k=128, "
                        "recommend.n_eval_prompts=40, ...)")
    p.add_argument("--force", action="store_true", help="overwrite a run directory holding "
                                                        "another run")
    p.set_defaults(handler=cmd_ban)

    p = sub.add_parser("recommend", help="show base vs after recommendation lists; --survey: "
                                         "the base model's most recommended titles")
    p.add_argument("prompt", nargs="?", help="the user's request")
    p.add_argument("--adapter", help="a ban's run directory (or its adapter/ folder)")
    p.add_argument("--catalog", help="catalogue CSV (default: the ban's, else the shipped one)")
    p.add_argument("--model", help="base model (default: the adapter's)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--survey", action="store_true",
                   help="list the titles the base model recommends most on the eval prompts")
    p.add_argument("--rank", action="store_true", help="with --survey: also rank the catalogue "
                                                       "by likelihood (slower)")
    p.add_argument("--top", type=int, default=20, help="with --survey: titles to show")
    p.add_argument("--out", help="with --survey: directory for survey.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recommend.* settings (same as for ban)")
    p.set_defaults(handler=cmd_recommend)


def cmd_ban(args: argparse.Namespace) -> None:
    from aglora.recommend.ban import run_ban
    rec = run_ban(args.item, Path(args.out), args.catalog, args.model, args.overrides,
                  args.force, Path(args.combine_with) if args.combine_with else None,
                  args.items_file)
    print_recommendation(rec)
    print(f"[aglora] run directory: {args.out}")


def cmd_recommend(args: argparse.Namespace) -> None:
    from aglora.recommend import show
    stray = [o for o in args.overrides if not o.strip().startswith("recommend.")]
    if stray:
        raise AgloraError(f"--set {stray[0]}: `aglora recommend` reads only recommend.* settings "
                          "(a ban's run config is fixed by its adapter); drop it, or pass it to "
                          "`aglora ban`")
    from aglora.recommend.settings import rec_config, split_overrides
    rec_config(split_overrides(args.overrides)[1])  # unknown or bad recommend.* keys fail here
    if args.survey:
        out = show.survey(args.catalog, args.model, args.overrides, args.rank, args.top,
                          Path(args.out) if args.out else None)
        print(f"{out['n_lists']} lists over {out['n_prompts']} held-apart prompts; "
              "most recommended:")
        for r in out["top"]:
            extra = f", median rank {r['median_rank']:g}" if "median_rank" in r else ""
            print(f"  {r['title']:<40} {r['lists']:3d} lists ({100 * r['exposure']:.1f} %), "
                  f"named in {r['prompts_naming_it']} prompts{extra}")
        if args.out:
            print(f"[aglora] wrote {Path(args.out) / 'survey.json'}")
        return
    if not args.adapter or not args.prompt:
        raise AgloraError('give --adapter RUN_DIR and a prompt, e.g. aglora recommend --adapter '
                          'runs/ban-matrix "I loved Alien. Recommend five films."'
                          " (or --survey)")
    base, after = show.compare_lists(Path(args.adapter), args.prompt, args.catalog, args.model,
                                     args.max_new_tokens)
    print(show.side_by_side(base, after))
    print("(BANNED: a banned title; ?: not a catalogue title; greedy decoding)")
