"""Run the controlled track: catalogue -> implant -> unlearn with each method -> TOFU metrics.

Output directory:
```
OUT/
  catalogue.json              the films and every question (seeded)
  reference/{base,full,retain}.json   the base model, the implanted full model, the retain model
  methods/<method>.json       one per method: settings, training history, metrics
  controlled.json             everything above in one file
  controlled.md               the table; controlled.png: forget quality vs model utility
```
Each reference and method file is written atomically when it is done, with the sha256 of what
it read (its settings, TOFU's files, the implanted weights it starts from); a rerun skips it only
while those match and the file reads back whole (`aglora.runtime.hashes`), so an interrupted run
resumes per method and nothing stale or truncated is trusted. One process at a time works in the
output directory (`aglora.runtime.lock`). The implanted models are cached across output
directories (`implant.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from torch import nn

from aglora.concepts import Probe, load_tofu, tofu_files
from aglora.controlled import methods
from aglora.controlled.catalogue import Catalogue, generate_catalogue
from aglora.controlled.forget_quality import (
    answer_probability,
    forget_quality,
    harmonic_mean,
    option_probability,
    tofu_truth_ratio,
    truth_ratio_score,
)
from aglora.controlled.implant import VARIANTS, ensure_implanted, load_implanted
from aglora.controlled.settings import ControlledConfig
from aglora.model.likelihood import choice_correct, margin, score_options_with_lengths
from aglora.runtime.artifacts import read_json, write_json, write_text, write_with
from aglora.runtime.format import fmt, fmt_p
from aglora.runtime.hashes import Hashes, changed_inputs, file_hashes, json_hash, read_result
from aglora.runtime.lock import holding

_log = logging.getLogger("aglora")


REFERENCES = ("base", "full", "retain")
Loader = Callable[[], tuple[nn.Module, object]]


# ---- evaluation --------------------------------------------------------------------------------
def eval_sets(cat: Catalogue, cfg: ControlledConfig) -> dict[str, list[Probe]]:
    """The probe sets every model is measured on (forget films, retain films, real world)."""
    retain_films = [f.index for f in cat.films if not f.forget][: cfg.utility_films]
    retain_probes = [p for q in cat.questions if q.film in retain_films
                     for p in (q.question, q.paraphrase)]
    tofu = load_tofu(cfg.real_world_limit) if cfg.real_world_limit else []
    sets = {"forget_films": cat.probes(forget=True, wording=cfg.fq_wording),
            "retain_films": retain_probes,
            "real_authors": [p for p in tofu if p.family == "tofu-real-authors"],
            "world_facts": [p for p in tofu if p.family == "tofu-world-facts"]}
    return {k: v for k, v in sets.items() if v}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def summarise_set(name: str, probes: list[Probe], scores: list[list[float]],
                  lengths: list[list[int]]) -> dict:
    """TOFU's per-set numbers from option scores; per-probe truth ratios kept for the KS test."""
    correct = [float(choice_correct(s)) for s in scores]
    ratios = [tofu_truth_ratio(s, n) for s, n in zip(scores, lengths, strict=True)]
    fictitious = name.endswith("_films")
    probs = [(answer_probability if fictitious else option_probability)(s, n)
             for s, n in zip(scores, lengths, strict=True)]
    by_family = {fam: _mean([c for c, p in zip(correct, probes, strict=True) if p.family == fam])
                 for fam in sorted({p.family for p in probes})}
    return {"n": len(probes), "accuracy": _mean(correct), "accuracy_by_family": by_family,
            "margin": _mean([margin(s) for s in scores]),
            "probability": _mean(probs), "probability_kind":
                "answer^(1/len)" if fictitious else "normalised over options",
            "truth_ratio_median": sorted(ratios)[len(ratios) // 2],
            "truth_ratio_score": truth_ratio_score(ratios),
            "truth_ratios": ratios, "ids": [p.id for p in probes]}


def evaluate_model(model: nn.Module, tok, sets: dict[str, list[Probe]], batch_size: int,
                   log: Callable[[str], None] = _log.info, label: str = "") -> dict:
    out = {}
    start = time.time()
    for name, probes in sets.items():
        scores, lengths = score_options_with_lengths(model, tok, probes, batch_size)
        out[name] = summarise_set(name, probes, scores, lengths)
    log(f"[controlled] evaluated {label} on {sum(len(v) for v in sets.values())} probes in "
        f"{time.time() - start:.0f}s: " + ", ".join(f"{k} acc {v['accuracy']:.2f}"
                                                    for k, v in out.items()))
    out["eval_seconds"] = round(time.time() - start, 1)
    return out


def model_utility(ev: dict) -> tuple[float, dict]:
    """Harmonic mean of (probability, accuracy, truth-ratio score) on each utility set."""
    parts = {}
    for name in ("retain_films", "real_authors", "world_facts"):
        if name in ev:
            for key in ("probability", "accuracy", "truth_ratio_score"):
                parts[f"{name}.{key}"] = ev[name][key]
    return harmonic_mean(list(parts.values())), parts


def add_tofu_metrics(result: dict, retain_ratios: list[float]) -> dict:
    ev = result["eval"]
    result.update(forget_quality(ev["forget_films"]["truth_ratios"], retain_ratios))
    result["model_utility"], result["utility_components"] = model_utility(ev)
    return result


# ---- the run -------------------------------------------------------------------------------------
def _settings(cfg: ControlledConfig, implant_folder: Path) -> dict:
    return {"config": asdict(cfg), "implant_cache": implant_folder.name}


def _reference_settings(settings: dict) -> dict:
    """What a reference evaluation depends on: not the methods or their settings."""
    config = {k: v for k, v in settings["config"].items() if k not in ("methods", "method")}
    return {"config": config, "implant_cache": settings["implant_cache"]}


def _inputs(settings: dict, cfg: ControlledConfig, weights: Hashes) -> Hashes:
    """sha256 of what a reference or method result reads: its settings, TOFU's files when the
    real-world sets are measured, and the hashes `weights` of the implanted weights it starts
    from (none for the base model)."""
    out = {"config": json_hash(settings)}
    if cfg.real_world_limit:
        out.update(file_hashes(tofu_files(), prefix=""))
    return {**out, **weights}


def implant_hashes(folder: Path) -> dict[str, Hashes]:
    """Per implant variant, the sha256 of its cached weights file (hashed once per track)."""
    return {v: file_hashes([folder / f"{v}.safetensors"], prefix="") for v in VARIANTS}


def _finished(path: Path, inputs: Hashes, name: str, log: Callable[[str], None]) -> dict | None:
    """The result at `path` when a rerun may keep it (it reads back whole and its inputs are
    unchanged), else None, saying why it is computed again."""
    result, why = read_result(path)
    if result is not None:
        why = changed_inputs(result.get("inputs"), inputs)
        if why is None:
            return result
    if why:
        log(f"[controlled] {name}: computed again ({why})")
    return None


def run_reference(name: str, load_base: Loader, folder: Path, sets: dict, cfg: ControlledConfig,
                  out: Path, settings: dict, log: Callable[[str], None],
                  implant: dict[str, Hashes] | None = None) -> dict:
    path = out / "reference" / f"{name}.json"
    settings = _reference_settings(settings)
    implant = implant if implant is not None else implant_hashes(folder)
    inputs = _inputs(settings, cfg, implant.get(name, {}))
    done = _finished(path, inputs, name, log)
    if done is not None:
        log(f"[controlled] {name}: already evaluated, skipped")
        return done
    model, tok = load_base() if name == "base" else load_implanted(load_base, folder, name)
    result = {"name": name, "settings": settings, "inputs": inputs,
              "eval": evaluate_model(model, tok, sets, cfg.eval_batch_size, log, name)}
    write_json(path, result)
    return result


def run_method(name: str, cat: Catalogue, load_base: Loader, folder: Path, sets: dict,
               cfg: ControlledConfig, out: Path, settings: dict,
               log: Callable[[str], None], implant: dict[str, Hashes] | None = None) -> dict:
    path = out / "methods" / f"{name}.json"
    implant = implant if implant is not None else implant_hashes(folder)
    inputs = _inputs(settings, cfg, implant["full"])
    done = _finished(path, inputs, name, log)
    if done is not None:
        log(f"[controlled] {name}: already finished, skipped")
        return done
    forget_items = [q.question for q in cat.questions if q.question.split == "forget"]
    retain_items = [q.question for q in cat.questions if q.question.split != "forget"]
    log(f"[controlled] == {name}: unlearning {len(forget_items)} forget items, "
        f"{cfg.method.steps} steps ==")
    start = time.time()
    model, tok = load_implanted(load_base, folder, "full")
    outcome = methods.run_method(name, model, tok, forget_items, retain_items, cfg.method, log)
    ev = evaluate_model(outcome.model, tok, sets, cfg.eval_batch_size, log, name)
    result = {"name": name, "settings": settings, "inputs": inputs, "steps": outcome.steps,
              "trainable_params": outcome.trainable_params,
              "train_seconds": round(outcome.seconds, 1),
              "wall_seconds": round(time.time() - start, 1), "history": outcome.history,
              "extra": outcome.extra, "eval": ev}
    write_json(path, result)
    return result


def run_controlled(cfg: ControlledConfig, out: Path, load_base: Loader,
                   cache_root: Path | None = None, log: Callable[[str], None] = _log.info) -> dict:
    """The whole track; returns (and writes) controlled.json. The output directory is locked
    while it runs (`aglora.runtime.lock`)."""
    from aglora.pipeline.run import check_out_dir
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with holding(out):
        return _run_track(cfg, out, load_base, cache_root, log)


def _run_track(cfg: ControlledConfig, out: Path, load_base: Loader, cache_root: Path | None,
               log: Callable[[str], None]) -> dict:
    start = time.time()
    cat = generate_catalogue(cfg.seed, cfg.n_films, cfg.n_forget)
    write_json(out / "catalogue.json", cat.to_dict())
    items = {"full": [q.question for q in cat.questions],
             "retain": [q.question for q in cat.questions if q.question.split != "forget"]}
    folder = ensure_implanted(load_base, items, cat.digest(), cfg.implant, cache_root, log)
    settings = _settings(cfg, folder)
    implant = implant_hashes(folder)
    sets = eval_sets(cat, cfg)
    refs = {name: run_reference(name, load_base, folder, sets, cfg, out, settings, log, implant)
            for name in REFERENCES}
    retain_ratios = refs["retain"]["eval"]["forget_films"]["truth_ratios"]
    for ref in refs.values():
        add_tofu_metrics(ref, retain_ratios)
    methods = {}
    for name in cfg.methods:
        methods[name] = add_tofu_metrics(
            run_method(name, cat, load_base, folder, sets, cfg, out, settings, log, implant),
            retain_ratios)
    summary = {"settings": settings, "catalogue_sha256": cat.digest(),
               "forget_films": [f.title for f in cat.forget_films],
               "implant": read_json(folder / "implant.json"),
               "references": refs, "methods": methods,
               "wall_seconds": round(time.time() - start, 1)}
    write_json(out / "controlled.json", summary)
    write_text(out / "controlled.md", render_markdown(summary))
    _plot(summary, out / "controlled.png", log)
    log(f"[controlled] wrote {out / 'controlled.md'}")
    return summary


# ---- outputs -------------------------------------------------------------------------------------


def render_markdown(summary: dict) -> str:
    cfg = summary["settings"]["config"]
    lines = [
        "# Controlled track (TOFU protocol on a fictitious film catalogue)", "",
        f"Seed {cfg['seed']}: {cfg['n_films']} films, forget {', '.join(summary['forget_films'])}."
        f" Unlearning budget: {cfg['method']['steps']} steps of {cfg['method']['batch_size']} "
        "forget + retain items for every method. Forget quality = KS p-value of truth ratios "
        "against the retain model on the forget films (higher = closer to never having seen "
        "them); model utility = harmonic mean of probability, accuracy and truth-ratio score "
        "on retain films, real authors and world facts (docs/controlled.md).", "",
        "| model | forget quality | KS D | model utility | forget-film acc | retain-film acc | "
        "real-world acc | steps | trainable params | train s | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def row(label: str, r: dict) -> str:
        ev = r["eval"]
        real = [ev[k]["accuracy"] for k in ("real_authors", "world_facts") if k in ev]
        cost = (f"{r['steps']} | {r['trainable_params']:,} | {fmt(r['train_seconds'], 0)} | "
                f"{fmt(r['wall_seconds'], 0)}" if "steps" in r else "– | – | – | –")
        return (f"| {label} | {fmt_p(r['forget_quality'])} | {fmt(r['ks_statistic'])} | "
                f"{fmt(r['model_utility'])} | {fmt(ev['forget_films']['accuracy'])} | "
                f"{fmt(ev['retain_films']['accuracy'])} | {fmt(_mean(real))} | {cost} |")

    labels = {"base": "base model (never saw the films)", "full": "full (implanted, before "
              "unlearning)", "retain": "retain (gold reference)"}
    for name, r in summary["references"].items():
        lines.append(row(labels.get(name, name), r))
    for name, r in summary["methods"].items():
        lines.append(row(f"**{name}**", r))
    lines += ["", "Accuracy = likelihood choice of the answer over 3 perturbed answers (chance "
              "0.25), over both wordings (implanted question and held-out paraphrase). train s = "
              "unlearning (with record+score for ag_lora); wall s adds loading and evaluation.",
              ""]
    fam = ["| model | forget: question | forget: paraphrase | retain: question | "
           "retain: paraphrase | truth ratio (median, forget) |", "| --- | --- | --- | --- | "
           "--- | --- |"]
    for name, r in [*summary["references"].items(), *summary["methods"].items()]:
        ev = r["eval"]
        ff, rf = ev["forget_films"]["accuracy_by_family"], ev["retain_films"]["accuracy_by_family"]
        fam.append(f"| {name} | {fmt(ff.get('question'))} | {fmt(ff.get('paraphrase'))} | "
                   f"{fmt(rf.get('question'))} | {fmt(rf.get('paraphrase'))} | "
                   f"{fmt(ev['forget_films']['truth_ratio_median'])} |")
    return "\n".join(lines + fam) + "\n"


def _plot(summary: dict, path: Path, log: Callable[[str], None]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log("[controlled] matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for group, marker in (("references", "s"), ("methods", "o")):
        for name, r in summary[group].items():
            y = max(r["forget_quality"], 1e-12)
            ax.scatter(r["model_utility"], y, marker=marker)
            ax.annotate(name, (r["model_utility"], y), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value)")
    ax.set_title("Controlled track: forget quality vs utility")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
