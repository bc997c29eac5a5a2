"""Recommendation lists for people to read: base vs after for one request, and the survey of
which titles the base model recommends most over the held-apart prompts (what a ban removes).
"""

from __future__ import annotations

from pathlib import Path

from aglora.recommend.catalog import load_catalog
from aglora.recommend.matcher import TitleMatcher, normalize
from aglora.recommend.settings import rec_config, split_overrides
from aglora.runtime.artifacts import read_json, write_json


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


def compare_lists(adapter: Path, prompt: str, catalog_path: str | None = None,
                  model: str | None = None,
                  max_new_tokens: int = 96) -> tuple[list[str], list[str]]:
    """Greedy base and after answers to `prompt` for a ban's adapter, one annotated line per
    list item (`BANNED ` for a banned title, `? ` for an item that is no catalogue title)."""
    from aglora.concepts import Probe
    from aglora.config import config_from_dict
    from aglora.model.adapter import adapter_disabled, load_adapter
    from aglora.model.decode import generate
    from aglora.model.load import load_model
    adapter = Path(adapter)
    run_dir = _run_dir(adapter)
    adapter_dir = run_dir / "adapter" if (run_dir / "adapter").is_dir() else adapter
    meta = read_json(adapter_dir / "aglora.json") if (adapter_dir / "aglora.json").is_file() \
        else {}
    cfg = config_from_dict(meta["config"]) if "config" in meta else None
    ban = read_json(run_dir / "ban.json") if (run_dir / "ban.json").is_file() else {}
    catalog = load_catalog(catalog_path or ban.get("catalog"))
    banned = {normalize(t) for t in ban.get("items", [])}
    model_cfg = cfg.model if cfg else None
    from aglora.config import ModelConfig
    if model:
        model_cfg = ModelConfig(name_or_path=model)
    peft_model, tok = load_model(model_cfg or ModelConfig())
    from aglora.recommend.lengths import check_request_length
    check_request_length(tok, peft_model, prompt, max_new_tokens)
    peft_model = load_adapter(peft_model, adapter_dir)
    probe = Probe(prompt=prompt)
    with adapter_disabled(peft_model):
        base = generate(peft_model, tok, [probe], 0, max_new_tokens=max_new_tokens)[0][0]
    after = generate(peft_model, tok, [probe], 0, max_new_tokens=max_new_tokens)[0][0]
    matcher = TitleMatcher(catalog.titles)
    return _annotate(base, matcher, banned), _annotate(after, matcher, banned)


def survey(catalog_path: str | None = None, model: str | None = None,
           overrides: list[str] | None = None, rank: bool = False, top: int = 20,
           out: Path | None = None) -> dict:
    """Exposure of the `top` catalogue titles in the base model's lists over the eval prompts
    (with `rank`: their median likelihood rank too); written to `out`/survey.json if given."""
    from aglora.config import ModelConfig
    from aglora.model.load import load_model
    from aglora.pipeline.run import check_out_dir
    from aglora.recommend.lengths import check_prompt_lengths
    from aglora.recommend.measure import base_measurements
    from aglora.recommend.metrics import title_counts
    from aglora.recommend.prompts import make_prompts
    catalog = load_catalog(catalog_path)
    _, rec_values = split_overrides(overrides or [])
    rec = rec_config(rec_values)
    if out is not None:
        check_out_dir(Path(out))  # before the survey's minutes of work
    base, tok = load_model(ModelConfig(name_or_path=model))
    _, eval_prompts = make_prompts(catalog, rec.n_train_prompts, rec.n_eval_prompts, rec.seed)
    check_prompt_lengths(tok, base, catalog, eval_prompts, rec, rank=rank)
    gens, scores = base_measurements(base, tok, eval_prompts, catalog, rec, need_ranks=rank)
    matcher = TitleMatcher(catalog.titles)
    counts = title_counts(gens, matcher)
    n_lists = sum(len(g) for g in gens)
    named = {normalize(t) for p in eval_prompts for t in p.liked}
    rows = []
    for key, n in counts.most_common(top):
        m = catalog.get(key)
        echoed = sum(1 for p in eval_prompts if key in {normalize(t) for t in p.liked})
        row = {"title": m.title, "lists": n, "exposure": n / n_lists,
               "prompts_naming_it": echoed, "in_profiles": key in named}
        if scores is not None:
            from aglora.recommend.metrics import banned_rank
            row["median_rank"] = banned_rank(scores, catalog.movies.index(m))["median"]
        rows.append(row)
    result = {"n_prompts": len(eval_prompts), "n_lists": n_lists, "top": rows}
    if out is not None:
        write_json(Path(out) / "survey.json", result)
    return result
