"""`aglora recommend`: the base list and the after list side by side; `--survey`: which titles
the base model recommends most over the held-apart prompts (to choose what a demo ban removes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aglora.errors import AgloraError
from aglora.io import read_json, write_json
from aglora.recommend.catalog import load_catalog
from aglora.recommend.matcher import TitleMatcher, normalize
from aglora.recommend.settings import rec_config, split_overrides


def _run_dir(adapter: Path) -> Path:
    return adapter.parent if adapter.name == "adapter" else adapter


def side_by_side(left: list[str], right: list[str], width: int = 44) -> str:
    rows = [f"{'base':<{width}}  after"]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        rows.append(f"{a[:width]:<{width}}  {b[:width]}")
    return "\n".join(rows)


def _annotate(text: str, matcher: TitleMatcher, banned: set[str]) -> list[str]:
    items = matcher.items(text)
    if not items:
        return [line for line in text.splitlines() if line.strip()] or ["(empty)"]
    out = []
    for item, key in items:
        mark = "BANNED " if key in banned else ("" if key else "? ")
        out.append(f"{mark}{item}")
    return out


def cmd_recommend(args: argparse.Namespace) -> None:
    if args.survey:
        survey(args)
        return
    if not args.adapter or not args.prompt:
        raise AgloraError('give --adapter RUN_DIR and a prompt, e.g. aglora recommend --adapter '
                          'runs/ban-matrix "I loved Alien. Recommend five films."'
                          " (or --survey)")
    from aglora.concepts import Probe
    from aglora.config import config_from_dict
    from aglora.generation import generate
    from aglora.lora import adapter_disabled, load_adapter
    from aglora.models import load_model
    adapter = Path(args.adapter)
    run_dir = _run_dir(adapter)
    adapter_dir = run_dir / "adapter" if (run_dir / "adapter").is_dir() else adapter
    meta = read_json(adapter_dir / "aglora.json") if (adapter_dir / "aglora.json").is_file() \
        else {}
    cfg = config_from_dict(meta["config"]) if "config" in meta else None
    ban = read_json(run_dir / "ban.json") if (run_dir / "ban.json").is_file() else {}
    catalog = load_catalog(args.catalog or ban.get("catalog"))
    banned = {normalize(t) for t in ban.get("items", [])}
    model_cfg = cfg.model if cfg else None
    if args.model:
        from aglora.config import ModelConfig
        model_cfg = ModelConfig(name_or_path=args.model)
    from aglora.config import ModelConfig
    model, tok = load_model(model_cfg or ModelConfig())
    model = load_adapter(model, adapter_dir)
    probe = Probe(prompt=args.prompt)
    with adapter_disabled(model):
        base = generate(model, tok, [probe], 0, max_new_tokens=args.max_new_tokens)[0][0]
    after = generate(model, tok, [probe], 0, max_new_tokens=args.max_new_tokens)[0][0]
    matcher = TitleMatcher(catalog.titles)
    print(side_by_side(_annotate(base, matcher, banned), _annotate(after, matcher, banned)))
    print("(BANNED: a banned title; ?: not a catalogue title; greedy decoding)")


def survey(args: argparse.Namespace) -> dict:
    """Exposure of every catalogue title in the base model's lists over the eval prompts."""
    from aglora.config import ModelConfig
    from aglora.models import load_model
    from aglora.recommend.measure import base_measurements
    from aglora.recommend.metrics import title_counts
    from aglora.recommend.prompts import make_prompts
    catalog = load_catalog(args.catalog)
    _, rec_values = split_overrides(args.overrides)
    rec = rec_config(rec_values)
    model, tok = load_model(ModelConfig(name_or_path=args.model))
    _, eval_prompts = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts, rec.seed)
    gens, scores = base_measurements(model, tok, eval_prompts, catalog, rec,
                                     need_ranks=args.rank)
    matcher = TitleMatcher(catalog.titles)
    counts = title_counts(gens, matcher)
    n_lists = sum(len(g) for g in gens)
    named = {normalize(t) for p in eval_prompts for t in p.liked}
    rows = []
    for key, n in counts.most_common(args.top):
        m = catalog.get(key)
        echoed = sum(1 for p in eval_prompts if key in {normalize(t) for t in p.liked})
        row = {"title": m.title, "lists": n, "exposure": n / n_lists,
               "prompts_naming_it": echoed, "in_profiles": key in named}
        if scores is not None:
            from aglora.recommend.metrics import banned_rank
            row["median_rank"] = banned_rank(scores, catalog.movies.index(m))["median"]
        rows.append(row)
    out = {"n_prompts": len(eval_prompts), "n_lists": n_lists, "top": rows}
    print(f"{n_lists} lists over {len(eval_prompts)} held-apart prompts; most recommended:")
    for r in rows:
        extra = f", median rank {r['median_rank']:g}" if "median_rank" in r else ""
        print(f"  {r['title']:<40} {r['lists']:3d} lists ({100 * r['exposure']:.1f} %), "
              f"named in {r['prompts_naming_it']} prompts{extra}")
    if args.out:
        write_json(Path(args.out) / "survey.json", out)
        print(f"[aglora] wrote {Path(args.out) / 'survey.json'}")
    return json.loads(json.dumps(out))


def add_parsers(sub) -> None:
    """The `ban` and `recommend` subcommands (called by aglora.cli.build_parser)."""
    p = sub.add_parser("ban", help="ban catalogue titles from the model's recommendations")
    p.add_argument("--item", action="append", default=[], metavar="TITLE",
                   help="a catalogue title to ban (repeatable: several titles, one adapter)")
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


def run_command(args: argparse.Namespace) -> None:
    if args.command == "ban":
        from aglora.recommend.ban import cmd_ban
        cmd_ban(args)
    else:
        cmd_recommend(args)
