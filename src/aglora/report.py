"""Human-readable report of one run: `report.md`, a self-contained `report.html`, and figures.

`write_report(run_dir)` reads the artifacts the pipeline left in a run directory (`metrics.json`
is required; `probe_results.jsonl`, `train_history.json`, `scores.safetensors`, `masks.json` and
`config.yaml` are optional, and a missing one only skips its section) and writes:

* `figures/*.png` - family accuracies and leak rates, the saliency heatmap with the selected
  neurons, selected neurons per layer, and the training curves;
* `report.md` - the report, figures referenced by relative path;
* `report.html` - the same report with the figures inlined as base64 data URIs, so the file can
  be mailed or archived alone (no scripts, no external links or stylesheets).

Both documents are built from one list of blocks (`Heading`, `Para`, `Table`, ...), so they always
carry the same sections. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aglora.io import atomic_path, read_json, write_text

FORGOTTEN_ACC_MARGIN = 0.10  # forget known accuracy after <= chance + this
FORGOTTEN_LEAK_MAX = 0.10  # forget leak rate after <= this
MAX_HEATMAP_COLS = 512
MAX_ANSWER_CHARS = 160
MAX_NEIGHBOR_EXAMPLES = 5
EXAMPLE_FAMILIES = ("direct", "paraphrase")
DASH = "–"


# ---------------------------------------------------------------------------------------------
# Document blocks and their two renderings


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    strong: str = ""


@dataclass
class Note:
    """A one-line remark, e.g. why a section was skipped."""

    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    path: Path  # absolute path of the written PNG
    rel: str  # path relative to the run directory, e.g. "figures/families.png"
    caption: str


@dataclass
class Details:
    summary: str
    body: str
    path: str


Block = Heading | Para | Note | Bullets | Table | Figure | Details


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def render_markdown(blocks: Iterable[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(f"**{b.strong}** {b.text}" if b.strong else b.text)
        elif isinstance(b, Note):
            out.append(f"*{b.text}*")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {_md_cell(i)}" for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |",
                     "|" + "---|" * len(b.headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.rel})\n\n*{b.caption}*")
        elif isinstance(b, Details):
            out.append(f"{b.summary}: [`{b.path}`]({b.path})")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
.note{color:#666;font-style:italic}pre{background:#f6f6f6;padding:.8em;overflow:auto}
.verdict{font-size:1.05em;padding:.7em 1em;border-radius:6px;background:#f4f6fb}
"""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_block(b: Block) -> str:
    e = html.escape
    if isinstance(b, Heading):
        return f"<h{b.level}>{e(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        strong = f"<strong>{e(b.strong)}</strong> " if b.strong else ""
        cls = ' class="verdict"' if b.strong else ""
        return f"<p{cls}>{strong}{e(b.text)}</p>"
    if isinstance(b, Note):
        return f'<p class="note">{e(b.text)}</p>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
        rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(b, Figure):
        return (f'<figure><img src="{_png_data_uri(b.path)}" alt="{e(b.caption)}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>")
    if isinstance(b, Details):
        return (f"<details><summary>{e(b.summary)} ({e(b.path)})</summary>"
                f"<pre>{e(b.body)}</pre></details>")
    raise TypeError(f"unknown block {b!r}")


def render_html(blocks: list[Block], title: str) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class RunInputs:
    run_dir: Path
    metrics: dict
    probes: list[dict] | None = None
    bad_probe_lines: int = 0
    history: dict | None = None
    scores: dict[str, Any] | None = None
    masks: dict | None = None
    config_text: str | None = None
    default_leak_patterns: list[str] = field(default_factory=list)


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def _concept_leak_patterns(config_text: str | None) -> list[str]:
    """The concept's default leak patterns (for probes that carry none), if they can be found."""
    if not config_text:
        return []
    try:
        import yaml

        from aglora.concepts import load_concept

        ref = (yaml.safe_load(config_text) or {}).get("concept")
        return list(load_concept(str(ref)).leak_patterns) if ref else []
    except Exception:  # a report must not fail because the concept file moved
        return []


def load_inputs(run_dir: Path) -> RunInputs:
    run_dir = Path(run_dir)
    inputs = RunInputs(run_dir, read_json(run_dir / "metrics.json"))
    if (run_dir / "probe_results.jsonl").is_file():
        inputs.probes, inputs.bad_probe_lines = _read_jsonl(run_dir / "probe_results.jsonl")
    if (run_dir / "train_history.json").is_file():
        inputs.history = read_json(run_dir / "train_history.json")
    if (run_dir / "scores.safetensors").is_file():
        from safetensors.torch import load_file

        inputs.scores = load_file(str(run_dir / "scores.safetensors"))
    if (run_dir / "masks.json").is_file():
        inputs.masks = read_json(run_dir / "masks.json")
    if (run_dir / "config.yaml").is_file():
        inputs.config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    inputs.default_leak_patterns = _concept_leak_patterns(inputs.config_text)
    return inputs


# ---------------------------------------------------------------------------------------------
# Number formatting


def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x)


def _ok(x: Any) -> bool:
    return math.isfinite(_num(x))


def fmt(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return f"{v:.{digits}f}" if math.isfinite(v) else DASH


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _arrow(d: Any, digits: int = 2) -> str:
    return f"{fmt(_get(d, 'base'), digits)} → {fmt(_get(d, 'after'), digits)}"


def _known_acc(g: dict) -> str:
    ka = g.get("known_accuracy") or {}
    ci = ka.get("after_ci95")
    text = _arrow(ka)
    if isinstance(ci, list) and len(ci) == 2 and all(_ok(c) for c in ci):
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def _leak(g: dict) -> str:
    lr = g.get("leak_rate") or {}
    n = lr.get("n_generations")
    if not n:
        return DASH
    return f"{_arrow(lr)} ({n})"


def human_bytes(n: Any) -> str:
    v = _num(n)
    if not math.isfinite(v):
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return DASH  # pragma: no cover


def _int(x: Any) -> str:
    v = _num(x)
    return f"{int(v):,}" if math.isfinite(v) else DASH


# ---------------------------------------------------------------------------------------------
# Sections


def verdict(metrics: dict) -> tuple[str, str]:
    """(label, explanation): "DEGENERATE", "Forgotten" or "Not forgotten"."""
    v = metrics.get("verdict") or {}
    forget = _get(metrics, "splits", "forget") or {}
    acc = _num(_get(forget, "known_accuracy", "after"))
    chance = _num(forget.get("chance"))
    leak = _num(_get(forget, "leak_rate", "after"))
    kept = (f"Kept: neighbour known accuracy after "
            f"{fmt(_get(metrics, 'splits', 'neighbor', 'known_accuracy', 'after'))}, utility "
            f"known accuracy after "
            f"{fmt(_get(metrics, 'splits', 'utility', 'known_accuracy', 'after'))}.")
    forget_text = (f"On forget probes the base model knew, known accuracy went "
                   f"{_arrow(forget.get('known_accuracy'))} (chance {fmt(chance)}) and the leak "
                   f"rate {_arrow(forget.get('leak_rate'))}.")
    if v.get("degenerate"):
        why = "for the reasons listed below" if v.get("reasons") else "(no reason recorded)"
        return "DEGENERATE", (f"The unlearned model collapsed {why}, so the forget numbers do "
                              f"not show forgetting. {forget_text} {kept}")
    forgotten = (acc <= chance + FORGOTTEN_ACC_MARGIN) and (leak <= FORGOTTEN_LEAK_MAX)
    criterion = (f"A run counts as forgotten when known accuracy after <= chance + "
                 f"{FORGOTTEN_ACC_MARGIN:.2f} and leak rate after <= {FORGOTTEN_LEAK_MAX:.2f}")
    if not forgotten and not (math.isfinite(acc) and math.isfinite(leak)):
        criterion += "; a criterion that could not be measured counts as not met"
    return ("Forgotten" if forgotten else "Not forgotten"), f"{forget_text} {kept} {criterion}."


def _title(metrics: dict) -> str:
    return (f"aglora report: forgetting “{metrics.get('concept', '?')}” "
            f"in {metrics.get('model', '?')}")


def verdict_section(metrics: dict) -> list[Block]:
    label, text = verdict(metrics)
    blocks: list[Block] = [Heading(_title(metrics), 1), Para(text, strong=f"{label}.")]
    reasons = _get(metrics, "verdict", "reasons")
    if _get(metrics, "verdict", "degenerate") and reasons:
        blocks.append(Bullets([str(r) for r in reasons]))
    return blocks


_GROUP_HEADERS = ["n", "known", "chance", "known acc. base → after [95% CI]",
                  "margin base → after", "leak rate base → after (gens)", "answer log-p drop",
                  "truth ratio base → after"]


def _group_row(name: str, g: dict) -> list[str]:
    return [name, _int(g.get("n")), _int(g.get("n_known")), fmt(g.get("chance")), _known_acc(g),
            _arrow(g.get("margin")), _leak(g), fmt(g.get("answer_logprob_drop")),
            _arrow(g.get("truth_ratio"))]


def tables_section(metrics: dict) -> list[Block]:
    blocks: list[Block] = [Heading("Summary")]
    splits = metrics.get("splits") or {}
    order = [s for s in ("forget", "neighbor", "utility") if s in splits]
    order += sorted(s for s in splits if s not in order)
    blocks.append(Table(["split", *_GROUP_HEADERS], [_group_row(s, splits[s]) for s in order]))
    fams = metrics.get("families") or {}
    if fams:
        rows = [_group_row(k, fams[k]) for k in _fam_order(fams)]
        blocks += [Heading("Per family", 3), Table(["family", *_GROUP_HEADERS], rows)]
    else:
        blocks.append(Note("No per-family metrics in metrics.json."))
    return blocks


def _fam_order(fams: dict) -> list[str]:
    rank = {"forget": 0, "neighbor": 1, "utility": 2}
    return sorted(fams, key=lambda k: (rank.get(k.split("/", 1)[0], 3), k))


# ---------------------------------------------------------------------------------------------
# Figures


def _figure_module():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFigure

    return MplFigure


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_families(metrics: dict, path: Path) -> bool:
    fams = metrics.get("families") or {}
    names = _fam_order(fams)
    if not names:
        return False
    leak_names = [k for k in names if _get(fams[k], "leak_rate", "n_generations")
                  and (_ok(_get(fams[k], "leak_rate", "base"))
                       or _ok(_get(fams[k], "leak_rate", "after")))]
    fig = _figure_module()(figsize=(max(7.0, 0.85 * len(names) + 2.5), 8.5 if leak_names else 5))
    axes = fig.subplots(2 if leak_names else 1, 1, squeeze=False)[:, 0]
    _bar_pairs(axes[0], names, [_get(fams[k], "known_accuracy", "base") for k in names],
               [_get(fams[k], "known_accuracy", "after") for k in names],
               "known accuracy", [fams[k].get("chance") for k in names])
    axes[0].set_title("Known accuracy per family (base vs after; black line: chance)")
    if leak_names:
        _bar_pairs(axes[1], leak_names, [_get(fams[k], "leak_rate", "base") for k in leak_names],
                   [_get(fams[k], "leak_rate", "after") for k in leak_names], "leak rate", None)
        axes[1].set_title("Leak rate of generations per family (base vs after)")
    _save(fig, path)
    return True


def _bar_pairs(ax, names: list[str], base: list, after: list, ylabel: str,
               chance: list | None) -> None:
    x = list(range(len(names)))
    w = 0.38
    b = [_num(v) for v in base]
    a = [_num(v) for v in after]
    ax.bar([i - w / 2 for i in x], [0 if math.isnan(v) else v for v in b], w, label="base",
           color="#9aa5b1")
    ax.bar([i + w / 2 for i in x], [0 if math.isnan(v) else v for v in a], w, label="after",
           color="#d9534f")
    for i, (vb, va) in enumerate(zip(b, a, strict=True)):
        for off, v in ((-w / 2, vb), (w / 2, va)):
            ax.text(i + off, (0 if math.isnan(v) else v) + 0.02, fmt(v), ha="center",
                    va="bottom", fontsize=7)
    if chance is not None:
        for i, c in enumerate(chance):
            if _ok(c):
                ax.hlines(_num(c), i - w - 0.05, i + w + 0.05, colors="black", linewidth=1.6,
                          label="chance" if i == 0 else None)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.3)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper center", ncol=len(uniq),
              frameon=False)


def _heat_values(score) -> tuple[Any, str]:
    """Scores mapped to [0, 1]: log1p(score / median) for non-negative scores, else ranks."""
    import numpy as np

    x = np.nan_to_num(score.astype("float64"), nan=0.0, posinf=0.0, neginf=0.0)
    positive = x[x > 0]
    if x.min() >= 0 and positive.size:
        v = np.log1p(x / np.median(positive))
        top = v.max()
        return (v / top if top > 0 else v), "log1p(score / median), scaled to max"
    flat = x.ravel()
    ranks = np.empty(flat.size)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    return (ranks / max(flat.size - 1, 1)).reshape(x.shape), "score quantile"


def _max_pool_cols(mat, max_cols: int):
    import numpy as np

    n = mat.shape[1]
    pool = max(1, math.ceil(n / max_cols))
    pad = (-n) % pool
    if pad:
        mat = np.concatenate([mat, np.zeros((mat.shape[0], pad))], axis=1)
    return mat.reshape(mat.shape[0], -1, pool).max(axis=2), pool


def plot_saliency(score, masks: dict | None, path: Path) -> None:
    values, scale_label = _heat_values(score.float().numpy())
    n_layers, d_ff = values.shape
    pooled, pool = _max_pool_cols(values, MAX_HEATMAP_COLS)
    fig = _figure_module()(figsize=(11, 2.2 + 0.16 * n_layers))
    ax = fig.subplots()
    im = ax.imshow(pooled, aspect="auto", origin="lower", cmap="Blues", vmin=0, vmax=1,
                   interpolation="nearest")
    xs, ys = [], []
    for layer, idx in ((masks or {}).get("selected") or {}).items():
        for j in idx:
            xs.append(int(j) // pool)
            ys.append(int(layer))
    if xs:
        ax.scatter(xs, ys, s=22, c="#e8112d", edgecolors="white", linewidths=0.6,
                   label=f"selected ({len(xs)})")
        ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    ax.set_xlabel(f"MLP neuron (d_ff = {d_ff}; max over blocks of {pool})" if pool > 1
                  else f"MLP neuron (d_ff = {d_ff})")
    ax.set_ylabel("layer")
    ax.set_title("Neuron score per layer, with the selected neurons (red)")
    ax.set_yticks(range(0, n_layers, max(1, math.ceil(n_layers / 16))))
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label=scale_label)
    _save(fig, path)


def _per_layer(masks: dict) -> list[int]:
    n_layers = int(_num(masks.get("n_layers")) if _ok(masks.get("n_layers")) else 0)
    counts: dict[int, int] = {}
    for k, v in (masks.get("per_layer") or {}).items():
        counts[int(k)] = int(v)
    if not counts:
        counts = {int(k): len(v) for k, v in (masks.get("selected") or {}).items()}
    n_layers = max(n_layers, max(counts, default=-1) + 1)
    return [counts.get(i, 0) for i in range(n_layers)]


def plot_mask_per_layer(masks: dict, path: Path) -> None:
    counts = _per_layer(masks)
    fig = _figure_module()(figsize=(max(6.0, 0.25 * len(counts) + 2), 3.4))
    ax = fig.subplots()
    from matplotlib.ticker import MaxNLocator

    ax.bar(range(len(counts)), counts, color="#4a76c4")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("selected neurons")
    ax.set_title(f"Selected neurons per layer ({sum(counts)} of {_int(masks.get('n_total'))})")
    ax.set_xticks(range(len(counts)))
    ax.tick_params(axis="x", labelsize=7)
    _save(fig, path)


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, h in enumerate(history):
        if _ok(h.get(key)):
            xs.append(_num(h.get("step")) if _ok(h.get("step")) else float(i + 1))
            ys.append(_num(h[key]))
    return xs, ys


def plot_training(history: list[dict], path: Path) -> bool:
    panels = [(k, t) for k, t in (("forget_loss", "forget loss"),
                                  ("retain_kl", "retain KL (vs base)"),
                                  ("train_forget_accuracy", "training forget accuracy"))
              if _series(history, k)[0]]
    if not panels and _series(history, "loss")[0]:
        panels = [("loss", "loss")]
    if not panels:
        return False
    fig = _figure_module()(figsize=(4.2 * len(panels) + 0.5, 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = {"forget_loss": "#d9534f", "retain_kl": "#4a76c4",
              "train_forget_accuracy": "#2e8b57", "loss": "#444"}
    for ax, (key, title) in zip(axes, panels, strict=True):
        xs, ys = _series(history, key)
        ax.plot(xs, ys, marker="o", markersize=3, color=colors[key])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def families_figure_section(metrics: dict, fig_dir: Path) -> list[Block]:
    path = fig_dir / "families.png"
    blocks: list[Block] = [Heading("Per-family accuracy and leaks")]
    if plot_families(metrics, path):
        blocks.append(Figure(path, "figures/families.png",
                             "Known accuracy (top) and leak rate (bottom) per family, base vs "
                             "after; the black line over each group is chance."))
    else:
        blocks.append(Note("Skipped: metrics.json has no per-family metrics."))
    return blocks


def mask_section(inputs: RunInputs, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Where the adapter acts")]
    score = (inputs.scores or {}).get("score")
    if score is not None and score.dim() == 2 and score.numel():
        path = fig_dir / "saliency_heatmap.png"
        plot_saliency(score, inputs.masks, path)
        blocks.append(Figure(path, "figures/saliency_heatmap.png",
                             "Layer × neuron score (log1p or rank scale, max-pooled over "
                             "neuron blocks); red dots are the neurons the mask selected."))
    else:
        blocks.append(Note("Skipped the saliency heatmap: scores.safetensors (tensor 'score') "
                           "not found."))
    if inputs.masks:
        path = fig_dir / "mask_per_layer.png"
        plot_mask_per_layer(inputs.masks, path)
        blocks.append(Figure(path, "figures/mask_per_layer.png", "Selected neurons per layer."))
    else:
        blocks.append(Note("Skipped the per-layer mask chart: masks.json not found."))
    return blocks


def training_section(inputs: RunInputs, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Training")]
    hist = (inputs.history or {}).get("history")
    if not isinstance(hist, list) or not hist:
        blocks.append(Note("Skipped: train_history.json not found or empty."))
        return blocks
    path = fig_dir / "training.png"
    if plot_training([h for h in hist if isinstance(h, dict)], path):
        blocks.append(Figure(path, "figures/training.png",
                             "Forget loss, retain KL and training forget accuracy per step."))
    else:
        blocks.append(Note("Skipped: train_history.json records no losses."))
    return blocks


# ---------------------------------------------------------------------------------------------
# Before / after responses


def truncate(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def leaks(text: str, patterns: Iterable[str]) -> bool:
    for p in patterns:
        try:
            if re.search(p, text, flags=re.IGNORECASE):
                return True
        except re.error:
            if p.lower() in text.lower():
                return True
    return False


def _leak_mark(gens: Any, patterns: list[str]) -> tuple[str, str]:
    """(greedy answer, mark) for one side of a probe."""
    if not isinstance(gens, list) or not gens:
        return DASH, DASH
    greedy = str(gens[0])
    if not patterns:
        return truncate(greedy), DASH
    return truncate(greedy), "✗ leak" if leaks(greedy, patterns) else "✓ clean"


def example_probes(probes: list[dict]) -> list[dict]:
    forget = [p for p in probes if p.get("split") == "forget"
              and p.get("family") in EXAMPLE_FAMILIES and p.get("base_generations")]
    neighbor = [p for p in probes if p.get("split") == "neighbor" and p.get("base_generations")]
    return forget + neighbor[:MAX_NEIGHBOR_EXAMPLES]


def responses_section(inputs: RunInputs) -> list[Block]:
    blocks: list[Block] = [Heading("Responses before and after")]
    if inputs.probes is None:
        blocks.append(Note("Skipped: probe_results.jsonl not found."))
        return blocks
    chosen = example_probes(inputs.probes)
    if not chosen:
        blocks.append(Note("No forget (direct / paraphrase) or neighbour probes with "
                           "generations in probe_results.jsonl."))
        return blocks
    rows = []
    for p in chosen:
        patterns = [str(x) for x in (p.get("leak_patterns") or inputs.default_leak_patterns)]
        prompt = str(p.get("prompt", ""))
        if p.get("prefix"):
            prompt += f" ⟶ {p['prefix']}"
        base, base_mark = _leak_mark(p.get("base_generations"), patterns)
        after, after_mark = _leak_mark(p.get("after_generations"), patterns)
        rows.append([f"{p.get('split', '?')}/{p.get('family', '?')}", truncate(prompt), base,
                     base_mark, after, after_mark])
    blocks.append(Note("Greedy answers; the leak mark applies each probe's leak patterns "
                       "(case-insensitive regex) to the answer beside it."))
    blocks.append(Table(["family", "prompt", "base answer", "base leak", "unlearned answer",
                         "unlearned leak"], rows))
    if inputs.bad_probe_lines:
        blocks.append(Note(f"{inputs.bad_probe_lines} malformed line(s) of "
                           "probe_results.jsonl were skipped."))
    return blocks


# ---------------------------------------------------------------------------------------------
# Cost, fluency, relearning, config


def cost_section(metrics: dict, history: dict | None) -> list[Block]:
    def pick(key: str) -> Any:
        v = metrics.get(key)
        return v if v is not None else (history or {}).get(key)

    share = _num(metrics.get("trainable_share"))
    base = _num(pick("base_params"))
    if not math.isfinite(share) and math.isfinite(base) and base > 0:
        share = _num(pick("trainable_params")) / base
    steps = pick("train_steps")
    if steps is None:
        steps = (history or {}).get("steps")
    stopped = metrics.get("stopped_early", (history or {}).get("stopped_early"))
    stop_text = {True: " (stopped early)", False: " (ran to max steps)"}.get(stopped, "")
    share_text = f"{100 * share:.3f}% of {_int(base)} base" if math.isfinite(share) else DASH
    rows = [["trainable parameters", f"{_int(pick('trainable_params'))} ({share_text})"],
            ["effective parameters (unmasked)", _int(pick("effective_params"))],
            ["adapter size", human_bytes(pick("adapter_bytes"))],
            ["train steps", f"{_int(steps)}{stop_text}"]]
    blocks: list[Block] = [Heading("Cost"), Table(["", "value"], rows)]
    wall = metrics.get("wall_seconds")
    if isinstance(wall, dict) and wall:
        total = sum(_num(v) for v in wall.values() if _ok(v))
        blocks.append(Table(["stage", "wall seconds"],
                            [[k, fmt(v)] for k, v in wall.items()] + [["total", fmt(total)]]))
    else:
        blocks.append(Note("No per-stage wall times in metrics.json."))
    return blocks


def fluency_section(metrics: dict) -> list[Block]:
    rows = [["distinct-2 of neighbour generations", _arrow(metrics.get("distinct2"))],
            ["3-gram repetition of neighbour generations", _arrow(metrics.get("repetition"))],
            ["KL(base ‖ after) per token, neighbours", fmt(metrics.get("kl_neighbor"), 4)],
            ["KL(base ‖ after) per token, utility", fmt(metrics.get("kl_utility"), 4)]]
    blocks: list[Block] = [Heading("Fluency"), Table(["measure", "value (base → after)"], rows)]
    thresholds = _get(metrics, "verdict", "thresholds")
    if isinstance(thresholds, dict) and thresholds:
        blocks.append(Note("Collapse thresholds: " + ", ".join(
            f"{k} = {fmt(v) if _ok(v) else v}" for k, v in thresholds.items()) + "."))
    return blocks


def relearn_section(metrics: dict) -> list[Block]:
    relearn = metrics.get("relearn")
    if not isinstance(relearn, dict):
        return []
    rows = [[str(k), fmt(v, 3) if isinstance(v, float) else
             (json.dumps(v) if isinstance(v, (dict, list)) else str(v))]
            for k, v in relearn.items()]
    return [Heading("Relearning attack"), Table(["", "value"], rows)]


def config_section(config_text: str | None) -> list[Block]:
    blocks: list[Block] = [Heading("Configuration")]
    if config_text is None:
        blocks.append(Note("config.yaml not found."))
    else:
        blocks.append(Details("Resolved configuration", config_text, "config.yaml"))
    return blocks


# ---------------------------------------------------------------------------------------------
# Entry point


def build_blocks(inputs: RunInputs, fig_dir: Path) -> list[Block]:
    from aglora.recommend.report_section import recommendation_section
    m = inputs.metrics
    return [*verdict_section(m), *recommendation_section(m), *tables_section(m),
            *families_figure_section(m, fig_dir),
            *mask_section(inputs, fig_dir), *training_section(inputs, fig_dir),
            *responses_section(inputs), *cost_section(m, inputs.history), *fluency_section(m),
            *relearn_section(m), *config_section(inputs.config_text)]


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write run_dir/report.md, run_dir/report.html and run_dir/figures/*.png; return (md, html)."""
    run_dir = Path(run_dir)
    inputs = load_inputs(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(inputs, fig_dir)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    write_text(md_path, render_markdown(blocks))
    write_text(html_path, render_html(blocks, _title(inputs.metrics)))
    return md_path, html_path
