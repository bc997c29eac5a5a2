"""`aglora ban`: ban catalogue titles from an LLM recommender with one masked-LoRA adapter.

Steps: resolve the titles in the catalogue (clear errors for unknown titles, with close matches),
build the concept spec from the base model (`spec.build_ban_spec`) into `RUN_DIR/ban/`, run the
ordinary pipeline (record, score, mask, train, eval), measure the recommendation metrics
(`metrics.recommendation_metrics`, base -> after, base side cached), add them to
`metrics.json` under `recommendation`, and write the report. With `--combine-with OTHER_RUN`, the
two adapters are loaded together (peft multi-adapter, both active) and each ban's exposure is
measured with both loaded against alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
from pathlib import Path

from aglora.errors import AgloraError
from aglora.io import read_json, write_json
from aglora.recommend.catalog import Catalog, Movie, load_catalog
from aglora.recommend.settings import RecConfig, rec_config, split_overrides

BAN_CONFIG = Path(__file__).resolve().parent.parent / "data" / "configs" / "ban.yaml"
INTERFERENCE_TOLERANCE = 0.02  # exposure with both adapters may exceed alone by this much


def resolve_items(catalog: Catalog, items: list[str] | None) -> list[Movie]:
    if not items:
        raise AgloraError("the ban list is empty; give at least one --item TITLE")
    out: list[Movie] = []
    for title in items:
        movie = catalog.resolve(title)
        if movie not in out:
            out.append(movie)
    return out


def _slug(movies: list[Movie]) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "-", m.key).strip("-") for m in movies)[:60]


def _ban_meta(catalog: Catalog, movies: list[Movie], rec: RecConfig) -> dict:
    return {"items": [m.title for m in movies], "catalog": str(catalog.source),
            "catalog_fingerprint": catalog.fingerprint(), "recommend": dataclasses.asdict(rec)}


def same_ban(stored: dict, meta: dict) -> bool:
    """Is the ban saved in a run's ban.json the one asked for? A `recommend` setting added after
    the run was made counts as its default there (the run then reopens instead of being refused).
    """
    defaults = dataclasses.asdict(RecConfig())
    rec = stored.get("recommend")
    if isinstance(rec, dict):
        stored = {**stored, "recommend": {**{k: v for k, v in defaults.items() if k not in rec},
                                          **rec}}
    return stored == meta


def cmd_ban(args: argparse.Namespace) -> None:
    from aglora.config import load_config
    from aglora.pipeline import open_run, run_all, run_stage

    catalog = load_catalog(args.catalog)
    movies = resolve_items(catalog, args.item)
    run_overrides, rec_values = split_overrides(args.overrides)
    rec = rec_config(rec_values)
    if args.model:
        run_overrides = [f"model.name_or_path={args.model}", *run_overrides]
    out = Path(args.out)
    cfg = load_config(BAN_CONFIG, run_overrides)
    cfg.name = "ban-" + _slug(movies)
    cfg.concept = str((out / "ban" / "concept.yaml").resolve())
    meta = _ban_meta(catalog, movies, rec)
    meta_path = out / "ban.json"
    if meta_path.is_file() and not same_ban(read_json(meta_path), meta):
        if not args.force:
            raise AgloraError(f"{out} holds another ban (ban.json differs); choose another --out "
                              "or pass --force")
        shutil.rmtree(out)
    ctx = open_run(cfg, out, force=args.force)
    write_json(meta_path, meta)
    from aglora.recommend.prompts import make_prompts
    train_prompts, eval_prompts = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts,
                                               rec.seed)
    if not (out / "ban" / "concept.yaml").is_file():
        from aglora.recommend.spec import build_ban_spec
        model, tok = ctx.base()
        build_ban_spec(model, tok, catalog, movies, train_prompts, eval_prompts, rec,
                       out / "ban")
    run_all(ctx, until="eval")
    metrics_path = out / "metrics.json"
    metrics = read_json(metrics_path)
    if "recommendation" not in metrics:
        print("[aglora] == recommendation metrics ==")
        model, tok = ctx.adapted()
        metrics["recommendation"], lists = measure_ban(model, tok, catalog, movies, eval_prompts,
                                                       rec)
        write_lists(out / "recommendation_lists.jsonl", eval_prompts, lists)
        write_json(metrics_path, metrics)
    elif "ratio_ci95" not in (metrics["recommendation"].get("validity_others") or {}):
        # a run from before the metric (or its interval)
        metrics["recommendation"]["validity_others"] = validity_others_from_lists(
            out / "recommendation_lists.jsonl", catalog, movies)
        write_json(metrics_path, metrics)
    if args.combine_with:
        metrics["recommendation"]["interference"] = interference(
            ctx, catalog, movies, eval_prompts, rec, metrics["recommendation"],
            Path(args.combine_with))
        write_json(metrics_path, metrics)
    run_stage(ctx, "report")
    print_recommendation(metrics["recommendation"])
    print(f"[aglora] run directory: {out}")


def write_lists(path: Path, prompts, lists: dict[str, list[list[str]]]) -> None:
    """One JSON line per eval prompt: the prompt and its lists for each model state."""
    import json

    from aglora.io import write_text
    rows = [{**p.to_dict(), **{k: v[i] for k, v in lists.items()}} for i, p in enumerate(prompts)]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def validity_others_from_lists(path: Path, catalog: Catalog, movies: list[Movie]) -> dict:
    """`validity_others` (base -> after) from a finished run's saved lists."""
    import json

    from aglora.recommend.matcher import TitleMatcher, normalize
    from aglora.recommend.metrics import ratio_interval, validity, validity_counts
    if not path.is_file():
        raise AgloraError(f"{path} is missing: rerun the ban with --force to measure the lists")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    matcher, keys = TitleMatcher(catalog.titles), {normalize(m.title) for m in movies}
    (b, nb), (a, na) = (validity([r[side] for r in rows], matcher, leave_out=keys)
                        for side in ("base", "after"))
    interval = ratio_interval(*(validity_counts([r[side] for r in rows], matcher, keys)
                                for side in ("base", "after")))
    return {"base": b, "after": a, "n_items": {"base": nb, "after": na}, "ratio_ci95": interval}


def measure_ban(model, tok, catalog: Catalog, movies: list[Movie], eval_prompts, rec: RecConfig
                ) -> tuple[dict, dict[str, list[list[str]]]]:
    """Recommendation metrics of a peft model (base side with its adapter disabled), and the
    generated lists {"base": ..., "after": ...}."""
    import time

    from aglora.recommend.measure import base_measurements, generate_lists, rank_catalogue
    from aglora.recommend.metrics import recommendation_metrics
    start = time.time()
    base_gens, base_scores = base_measurements(model, tok, eval_prompts, catalog, rec)
    after_gens = generate_lists(model, tok, eval_prompts, rec, "after")
    after_scores = rank_catalogue(model, tok, eval_prompts, catalog, rec, "after")
    out = recommendation_metrics(catalog, [m.title for m in movies], eval_prompts, base_gens,
                                 after_gens, base_scores, after_scores,
                                 list(range(min(rec.n_rank_prompts, len(eval_prompts)))))
    out["examples"] = [{"prompt": p.text, "base": b[0], "after": a[0]}
                       for p, b, a in list(zip(eval_prompts, base_gens, after_gens,
                                               strict=True))[:6]]
    out["settings"] = dataclasses.asdict(rec)
    out["seconds"] = round(time.time() - start, 1)
    return out, {"base": base_gens, "after": after_gens}


def load_both(ctx, other: Path):
    """A fresh base model with this run's adapter and `other`'s, both active."""
    from aglora.lora import load_adapter
    from aglora.models import check_fingerprint, load_model
    model, tok = load_model(ctx.cfg.model)
    peft_model = load_adapter(model, ctx.run_dir / "adapter")
    other_dir = other / "adapter" if (other / "adapter").is_dir() else other
    meta = read_json(other_dir / "aglora.json")
    check_fingerprint(meta["base_fingerprint"], peft_model, f"adapter {other_dir}")
    peft_model.load_adapter(str(other_dir), adapter_name="other")
    peft_model.base_model.set_adapter(["default", "other"])
    peft_model.eval()
    return peft_model, tok


def interference(ctx, catalog: Catalog, movies: list[Movie], eval_prompts, rec: RecConfig,
                 this: dict, other: Path) -> dict:
    """Each ban's exposure with both adapters loaded against alone (same prompts, same seeds)."""
    from aglora.recommend.matcher import TitleMatcher, normalize
    from aglora.recommend.measure import generate_lists
    from aglora.recommend.metrics import exposure, names_banned, validity
    other_meta = read_json(other / "ban.json")
    if (other_meta["catalog_fingerprint"] != catalog.fingerprint()
            or other_meta["recommend"] != dataclasses.asdict(rec)):
        raise AgloraError(f"{other} was measured on another catalogue or prompt set; rerun it "
                          "with the same --catalog and recommend.* settings")
    other_rec = read_json(other / "metrics.json")["recommendation"]
    print(f"[aglora] == interference with {other} ==")
    model, tok = load_both(ctx, other)
    both = generate_lists(model, tok, eval_prompts, rec, "both adapters")
    write_lists(ctx.run_dir / "interference_lists.jsonl", eval_prompts, {"both": both})
    matcher = TitleMatcher(catalog.titles)
    mine = {m.key for m in movies}
    theirs = {normalize(t) for t in other_meta["items"]}
    out = {"other_run": str(other), "other_banned": other_meta["items"],
           "tolerance": INTERFERENCE_TOLERANCE}
    for name, keys, alone in (("this", mine, this), ("other", theirs, other_rec)):
        clean = [g for g, p in zip(both, eval_prompts, strict=True)
                 if not names_banned(p, keys | mine | theirs)]
        out[name] = {"exposure_alone": alone["exposure"]["after"],
                     "exposure_both": exposure(clean, keys, matcher)}
    out["validity"] = {"this_alone": this["validity"]["after"],
                       "other_alone": other_rec["validity"]["after"],
                       "both": validity(both, matcher)[0]}
    out["validity_distinct"] = {
        "this_alone": this.get("validity_distinct", {}).get("after"),
        "other_alone": other_rec.get("validity_distinct", {}).get("after"),
        "both": validity(both, matcher, distinct=True)[0]}
    out["interferes"] = any(out[n]["exposure_both"] > out[n]["exposure_alone"]
                            + INTERFERENCE_TOLERANCE for n in ("this", "other"))
    return out


def _f(x: float, pct: bool = True) -> str:
    if x != x:
        return "–"
    return f"{100 * x:.1f} %" if pct else f"{x:.2f}"


def print_recommendation(r: dict) -> None:
    print(f"banned: {', '.join(r['banned'])} ({r['n_titles']} catalogue titles, "
          f"{r['n_lists']} held-apart lists, {r['n_rank_prompts']} ranked prompts)")
    print(f"  exposure        {_f(r['exposure']['base'])} → {_f(r['exposure']['after'])}")
    for title, t in r["banned_titles"].items():
        print(f"  {title}: exposure {_f(t['exposure']['base'])} → {_f(t['exposure']['after'])},"
              f" median rank {t['median_rank']['base']:g} → {t['median_rank']['after']:g}")
    print(f"  NDCG@10 (rest)  {_f(r['ndcg10']['mean'], False)} (min "
          f"{_f(r['ndcg10']['min'], False)})")
    print(f"  validity        {_f(r['validity']['base'])} → {_f(r['validity']['after'])}")
    if "validity_others" in r:
        vo = r["validity_others"]
        ci = vo.get("ratio_ci95")
        ratio = vo["after"] / vo["base"] if vo["base"] else float("nan")
        print(f"  validity of the other items (banned titles left out) {_f(vo['base'])} → "
              f"{_f(vo['after'])} ({ratio:.2f}× base"
              + (f", 95 % interval {ci[0]:.2f}–{ci[1]:.2f}×)" if ci else ")"))
    if "validity_distinct" in r:
        vd = r["validity_distinct"]
        print(f"  validity (distinct items per list) {_f(vd['base'])} → {_f(vd['after'])}")
    print(f"  genre agreement {_f(r['genre_agreement']['base'])} → "
          f"{_f(r['genre_agreement']['after'])}")
    inter = r.get("interference")
    if inter:
        print(f"  with {inter['other_run']} loaded too: this ban "
              f"{_f(inter['this']['exposure_alone'])} → {_f(inter['this']['exposure_both'])}, "
              f"other ban {_f(inter['other']['exposure_alone'])} → "
              f"{_f(inter['other']['exposure_both'])}: "
              + ("INTERFERE" if inter["interferes"] else "no interference"))
