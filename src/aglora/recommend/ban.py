"""Ban catalogue titles from an LLM recommender with one masked-LoRA adapter.

Steps: resolve the titles in the catalogue (clear errors for unknown titles, with close matches),
check every prompt against the model's context once it loads (`lengths`), build the concept spec
from the base model (`spec.build_ban_spec`) into `RUN_DIR/ban/`, run the
ordinary pipeline (record, score, mask, train, eval), measure the recommendation metrics
(`metrics.recommendation_metrics`, base -> after, base side cached), add them to
`metrics.json` under `recommendation`, and write the report. With `--combine-with OTHER_RUN`, the
two adapters are loaded together (peft multi-adapter, both active) and each ban's exposure is
measured with both loaded against alone.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from aglora.errors import AgloraError
from aglora.recommend.catalog import Catalog, Movie, load_catalog
from aglora.recommend.items import asked_items, resolve_items
from aglora.recommend.report_section import recommendation_section
from aglora.recommend.settings import RecConfig, rec_config, split_overrides
from aglora.runtime.artifacts import read_json, write_json

BAN_CONFIG = Path(__file__).resolve().parent.parent / "data" / "configs" / "ban.yaml"
INTERFERENCE_TOLERANCE = 0.02  # exposure with both adapters may exceed alone by this much
REPORT_SECTIONS = (recommendation_section,)  # what a ban adds to a run's report
log = logging.getLogger("aglora")


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


def ban_mask_k(k: int, n_titles: int, rec: RecConfig, run_overrides: list[str]) -> int:
    """The ban's mask size: `k` per title (`recommend.mask_per_title`), unless the caller set
    mask.k itself (then that is the whole mask)."""
    given = any(o.split("=", 1)[0].strip() == "mask.k" for o in run_overrides)
    return k if given or not rec.mask_per_title else k * n_titles


def run_ban(items: list[str], out: Path, catalog_path: str | None = None,
            model: str | None = None, overrides: list[str] | None = None, force: bool = False,
            combine_with: Path | None = None, items_file: str | Path | None = None) -> dict:
    """Ban `items` and the titles of `items_file` (`items.read_items_file`) in one adapter into
    run directory `out`; returns the recommendation metrics.

    `overrides`: `KEY=VALUE` for the run config and `recommend.KEY=VALUE` for the ban settings.
    Reruns resume; a directory holding another ban is refused unless `force`.
    """
    from aglora.config import load_config
    from aglora.model.load import resolve_device
    from aglora.pipeline.run import check_out_dir, open_run, prepare_run_dir, run_all, run_stage

    catalog = load_catalog(catalog_path)
    movies = resolve_items(catalog, asked_items(items, items_file))
    run_overrides, rec_values = split_overrides(overrides or [])
    rec = rec_config(rec_values)
    if model:
        run_overrides = [f"model.name_or_path={model}", *run_overrides]
    out = Path(out)
    cfg = load_config(BAN_CONFIG, run_overrides)
    cfg.mask.k = ban_mask_k(cfg.mask.k, len(movies), rec, run_overrides)
    cfg.name = "ban-" + _slug(movies)
    cfg.concept = str((out / "ban" / "concept.yaml").resolve())
    meta = _ban_meta(catalog, movies, rec)
    meta_path = out / "ban.json"
    check_out_dir(out)
    resolve_device(cfg.model.device)  # before any model loads
    if meta_path.is_file() and not same_ban(read_json(meta_path), meta):
        if not force:
            raise AgloraError(f"{out} holds another ban (ban.json differs); choose another --out "
                              "or pass --force (it deletes only aglora's own files)")
        prepare_run_dir(out, same_run=False, force=True, what="ban")  # aglora's files only
    ctx = open_run(cfg, out, force=force)
    ctx.report_sections = REPORT_SECTIONS
    write_json(meta_path, meta)
    from aglora.recommend.prompts import make_prompts
    train_prompts, eval_prompts = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts,
                                               rec.seed)
    from aglora.recommend.lengths import check_ban_lengths
    ctx.model_checks = (lambda model, tok: check_ban_lengths(
        tok, model, catalog, movies, train_prompts + eval_prompts, rec),)  # once it loads
    if not (out / "ban" / "concept.yaml").is_file():
        from aglora.recommend.spec import build_ban_spec
        model, tok = ctx.base()
        build_ban_spec(model, tok, catalog, movies, train_prompts, eval_prompts, rec,
                       out / "ban")
    run_all(ctx, until="eval")
    metrics_path = out / "metrics.json"
    metrics = read_json(metrics_path)
    if "recommendation" not in metrics:
        log.info("[aglora] == recommendation metrics ==")
        model, tok = ctx.adapted()
        metrics["recommendation"], lists = measure_ban(model, tok, catalog, movies, eval_prompts,
                                                       rec)
        write_lists(out / "recommendation_lists.jsonl", eval_prompts, lists)
        write_json(metrics_path, metrics)
        ctx.refresh_artifacts("eval")  # the eval stage's metrics, amended on purpose
    elif "ratio_ci95" not in (metrics["recommendation"].get("validity_others") or {}):
        # a run from before the metric (or its interval)
        metrics["recommendation"]["validity_others"] = validity_others_from_lists(
            out / "recommendation_lists.jsonl", catalog, movies)
        write_json(metrics_path, metrics)
        ctx.refresh_artifacts("eval")
    if combine_with:
        metrics["recommendation"]["interference"] = interference(
            ctx, catalog, movies, eval_prompts, rec, metrics["recommendation"],
            Path(combine_with))
        write_json(metrics_path, metrics)
        ctx.refresh_artifacts("eval")
    run_stage(ctx, "report")
    return metrics["recommendation"]


def write_lists(path: Path, prompts, lists: dict[str, list[list[str]]]) -> None:
    """One JSON line per eval prompt: the prompt and its lists for each model state."""
    import json

    from aglora.runtime.artifacts import write_text
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
    from aglora.model.adapter import load_adapter
    from aglora.model.identity import check_fingerprint
    from aglora.model.load import load_model
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
    log.info(f"[aglora] == interference with {other} ==")
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
