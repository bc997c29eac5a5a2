"""The report's figures (matplotlib, Agg backend, written atomically as PNG).

Family accuracies and leak rates (base vs after, chance marked), the layer x neuron score heatmap
with the selected neurons, selected neurons per layer, the training curves, and the relearning
curves (recovered share vs steps). Every plot reads
values defensively: a missing or non-finite number is drawn as absent, never raises.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aglora.pipeline.report.document import family_order
from aglora.runtime.artifacts import atomic_path
from aglora.runtime.format import as_float, dig, fmt, fmt_int, is_number

MAX_HEATMAP_COLS = 512


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
    names = family_order(fams)
    if not names:
        return False
    leak_names = [k for k in names if dig(fams[k], "leak_rate", "n_generations")
                  and (is_number(dig(fams[k], "leak_rate", "base"))
                       or is_number(dig(fams[k], "leak_rate", "after")))]
    fig = _figure_module()(figsize=(max(7.0, 0.85 * len(names) + 2.5), 8.5 if leak_names else 5))
    axes = fig.subplots(2 if leak_names else 1, 1, squeeze=False)[:, 0]
    _bar_pairs(axes[0], names, [dig(fams[k], "known_accuracy", "base") for k in names],
               [dig(fams[k], "known_accuracy", "after") for k in names],
               "known accuracy", [fams[k].get("chance") for k in names])
    axes[0].set_title("Known accuracy per family (base vs after; black line: chance)")
    if leak_names:
        _bar_pairs(axes[1], leak_names, [dig(fams[k], "leak_rate", "base") for k in leak_names],
                   [dig(fams[k], "leak_rate", "after") for k in leak_names], "leak rate", None)
        axes[1].set_title("Leak rate of generations per family (base vs after)")
    _save(fig, path)
    return True


ANSWER_COLOURS = {"leak": "#d9534f", "mangled": "#f0ad4e", "refusal": "#5cb85c",
                  "looping": "#8e6c8a", "other": "#5bc0de"}


def plot_answer_shares(answers: dict, path: Path) -> bool:
    """Stacked bars: the share of each answer label per forget family, base and after."""
    fams = (answers or {}).get("families") or {}
    names = family_order(fams)
    if not names:
        return False
    fig = _figure_module()(figsize=(max(7.0, 1.1 * len(names) + 2.5), 4.8))
    ax = fig.subplots()
    w = 0.38
    for j, side in enumerate(("base", "after")):
        bottom = [0.0] * len(names)
        for label, colour in ANSWER_COLOURS.items():
            vals = [as_float(dig(fams[k], side, "shares", label)) for k in names]
            vals = [0.0 if math.isnan(v) else v for v in vals]
            ax.bar([i + (j - 0.5) * w for i in range(len(names))], vals, w * 0.95,
                   bottom=bottom, color=colour, label=label if j == 1 else None,
                   edgecolor="white", linewidth=0.5, hatch=None if j else "//")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.split("/", 1)[-1] for n in names], rotation=30, ha="right",
                       fontsize=8, parse_math=False)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share of generations")
    ax.set_title("Forget answers per family: base (hatched, left) and after (right)")
    ax.legend(fontsize=8, loc="upper center", ncol=len(ANSWER_COLOURS), frameon=False)
    _save(fig, path)
    return True


def _bar_pairs(ax, names: list[str], base: list, after: list, ylabel: str,
               chance: list | None) -> None:
    x = list(range(len(names)))
    w = 0.38
    b = [as_float(v) for v in base]
    a = [as_float(v) for v in after]
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
            if is_number(c):
                ax.hlines(as_float(c), i - w - 0.05, i + w + 0.05, colors="black", linewidth=1.6,
                          label="chance" if i == 0 else None)
    ax.set_xticks(x)
    # parse_math=False: a family named "$5 films" is text, not matplotlib mathtext
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8, parse_math=False)
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
    n_layers = int(as_float(masks.get("n_layers")) if is_number(masks.get("n_layers")) else 0)
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
    ax.set_title(f"Selected neurons per layer ({sum(counts)} of {fmt_int(masks.get('n_total'))})")
    ax.set_xticks(range(len(counts)))
    ax.tick_params(axis="x", labelsize=7)
    _save(fig, path)


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, h in enumerate(history):
        if is_number(h.get(key)):
            xs.append(as_float(h.get("step")) if is_number(h.get("step")) else float(i + 1))
            ys.append(as_float(h[key]))
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


RELEARN_CURVES = (("relearn", "fine-tune on forget facts (others scored)", "#d9534f"),
                  ("relearn_benign", "benign fine-tune (neighbour + utility)", "#4a76c4"))


def _curve_series(attack: Any, key: str) -> tuple[list[float], list[float]]:
    """(steps, recovered share `key`) of an attack's curve, the finite points only."""
    xs, ys = [], []
    for p in (attack.get("curve") if isinstance(attack, dict) else None) or []:
        if isinstance(p, dict) and is_number(p.get("steps")) and is_number(p.get(key)):
            xs.append(as_float(p["steps"]))
            ys.append(as_float(p[key]))
    return xs, ys


def plot_relearning(metrics: dict, path: Path) -> bool:
    """Recovered share vs fine-tuning steps, accuracy and margin side by side: the relearning
    curve and the benign one, the in-context attack as a dotted level (no training). False (and
    nothing written) when no attack has a curve point."""
    panels = (("recovered_share", "known accuracy"), ("recovered_share_margin", "margin"))
    if not any(_curve_series(metrics.get(k), key)[0]
               for k, _, _ in RELEARN_CURVES for key, _ in panels):
        return False
    fig = _figure_module()(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    in_context = metrics.get("relearn_in_context")
    steps = sorted({x for k, _, _ in RELEARN_CURVES for key, _ in panels
                    for x in _curve_series(metrics.get(k), key)[0]})
    for ax, (key, title) in zip(axes, panels, strict=True):
        ax.set_xticks(steps)
        for name, label, colour in RELEARN_CURVES:
            xs, ys = _curve_series(metrics.get(name), key)
            if xs:
                ax.plot(xs, ys, marker="o", markersize=4, color=colour, label=label)
        level = in_context.get(key) if isinstance(in_context, dict) else None
        if is_number(level):
            ax.axhline(as_float(level), color="#2e8b57", linestyle=":", linewidth=1.6,
                       label="facts in the prompt (no training)")
        ax.axhline(0.0, color="#999", linewidth=0.8)
        ax.axhline(1.0, color="#999", linewidth=0.8, linestyle="--")
        ax.set_title(f"Recovered share of the {title} gap")
        ax.set_xlabel("fine-tuning steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recovered share (0 = none, 1 = base)")
    axes[0].legend(fontsize=7, loc="best")
    _save(fig, path)
    return True
