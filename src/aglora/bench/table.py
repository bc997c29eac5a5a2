"""The bench's outputs from its finished cells: per setting mean and sd over seeds, `bench.md`
(one table, plus forget families), `bench.json` (with the machine and a host-speed index) and the
trade-off figure (forget accuracy against neighbour accuracy and neighbour KL)."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections import defaultdict
from pathlib import Path

import torch

from aglora.bench.config import BenchConfig, MethodEntry
from aglora.errors import AgloraError
from aglora.methods import METHODS
from aglora.runtime.artifacts import (
    write_json,
    write_text,
    write_with,
)
from aglora.runtime.format import fmt_count, fmt_mean_sd, human_bytes
from aglora.runtime.hashes import read_result


def _get(d: dict, path: str) -> float:
    for part in path.split("/"):
        if not isinstance(d, dict) or part not in d:
            return float("nan")
        d = d[part]
    try:
        return float(d)
    except (TypeError, ValueError):
        return float("nan")


def cell_values(cell: dict) -> dict[str, float]:
    """The flat numbers of one cell that the table summarises."""
    m = cell["metrics"]
    v = {
        "forget_acc": _get(m, "splits/forget/known_accuracy/after"),
        "forget_margin": _get(m, "splits/forget/margin/after"),
        "forget_leak": _get(m, "splits/forget/leak_rate/after"),
        "neighbor_acc": _get(m, "splits/neighbor/known_accuracy/after"),
        "utility_acc": _get(m, "splits/utility/known_accuracy/after"),
        "kl_neighbor": _get(m, "kl_neighbor"),
        "distinct2": _get(m, "distinct2/after"),
        "degenerate": float(bool(m.get("verdict", {}).get("degenerate"))),
        "relearn": _get(m, "relearn/recovered_share"),
        "relearn_margin": _get(m, "relearn/recovered_share_margin"),
        "steps": float(cell["train"]["steps"]),
        "method_seconds": float(cell["cost"]["method_seconds"]),
        "eval_seconds": float(cell["cost"]["eval_seconds"]),
        "peak_mb": cell["cost"]["peak_memory_bytes"] / 2**20,
        "trainable_params": float(cell["cost"]["trainable_params"]),
        "artifact_bytes": float(cell["cost"]["artifact_bytes"]),
    }
    for fam, g in m.get("families", {}).items():
        if fam.startswith("forget/"):
            name = fam.split("/", 1)[1]
            v[f"fam/{name}/acc"] = _get(g, "known_accuracy/after")
            v[f"fam/{name}/leak"] = _get(g, "leak_rate/after")
    return v


def _stats(xs: list[float]) -> dict:
    xs = [x for x in xs if x == x]
    if not xs:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": len(xs), "min": min(xs), "max": max(xs)}


def summarise(cells: list[dict]) -> dict[str, dict]:
    """Per label: method, seeds, and mean/sd/min/max of every cell value."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        by_label[c["label"]].append(c)
    out = {}
    for label, cs in by_label.items():
        vals = [cell_values(c) for c in cs]
        keys = sorted({k for v in vals for k in v})
        out[label] = {"method": cs[0]["method"], "seeds": sorted(c["seed"] for c in cs),
                      "values": {k: _stats([v.get(k, float("nan")) for v in vals])
                                 for k in keys}}
    return out


def base_values(cells: list[dict]) -> dict[str, float]:
    """The base model's numbers (identical in every cell: the base side is shared)."""
    m = cells[0]["metrics"]
    v = {"forget_acc": _get(m, "splits/forget/known_accuracy/base"),
         "forget_leak": _get(m, "splits/forget/leak_rate/base"),
         "neighbor_acc": _get(m, "splits/neighbor/known_accuracy/base"),
         "utility_acc": _get(m, "splits/utility/known_accuracy/base"),
         "chance": _get(m, "splits/forget/chance"),
         "n_known_forget": _get(m, "splits/forget/n_known"),
         "n_known_neighbor": _get(m, "splits/neighbor/n_known"),
         "n_known_utility": _get(m, "splits/utility/n_known"),
         "distinct2": _get(m, "distinct2/base")}
    for fam, g in m.get("families", {}).items():
        if fam.startswith("forget/"):
            name = fam.split("/", 1)[1]
            v[f"fam/{name}/acc"] = _get(g, "known_accuracy/base")
            v[f"fam/{name}/leak"] = _get(g, "leak_rate/base")
            v[f"fam/{name}/n_known"] = _get(g, "n_known")
    return v


def bench_markdown(summary: dict[str, dict], base: dict[str, float], header: str) -> str:
    lines = [header, ""]
    lines += [
        "| method | seeds | forget acc ↓ | forget leak ↓ | neighbour acc ↑ | utility acc ↑ | "
        "KL neighbours ↓ | collapsed | relearn recovered ↓ | steps | train s | peak MB | "
        "trainable params | artifact |",
        "|" + " --- |" * 14,
        f"| base | – | {base['forget_acc']:.2f} (chance {base['chance']:.2f}) | "
        f"{base['forget_leak']:.2f} | {base['neighbor_acc']:.2f} | {base['utility_acc']:.2f} | "
        "0 | – | – | – | – | – | – | – |",
    ]
    for label, row in summary.items():
        v = row["values"]
        collapsed = v["degenerate"]
        lines.append(
            f"| {label} | {v['forget_acc']['n']} | {fmt_mean_sd(v['forget_acc'])} | "
            f"{fmt_mean_sd(v['forget_leak'])} | {fmt_mean_sd(v['neighbor_acc'])} | "
            f"{fmt_mean_sd(v['utility_acc'])} | "
            f"{fmt_mean_sd(v['kl_neighbor'], 4)} | "
            f"{round(collapsed['mean'] * collapsed['n'])}/{collapsed['n']} | "
            f"{fmt_mean_sd(v['relearn'])} | {fmt_mean_sd(v['steps'], 0)} | "
            f"{fmt_mean_sd(v['method_seconds'], 0)} | "
            f"{fmt_mean_sd(v['peak_mb'], 0)} | {fmt_count(v['trainable_params']['mean'])} | "
            f"{human_bytes(v['artifact_bytes']['mean'])} |")
    fams = sorted({k.split("/")[1] for k in base if k.startswith("fam/")})
    if fams:
        lines += ["", "Forget probes per family: known accuracy / greedy leak rate after "
                  "(mean over seeds; base first).", ""]
        lines.append("| method | " + " | ".join(
            f"{f} (n={base.get(f'fam/{f}/n_known', float('nan')):.0f})" for f in fams) + " |")
        lines.append("|" + " --- |" * (len(fams) + 1))
        lines.append("| base | " + " | ".join(
            f"{base[f'fam/{f}/acc']:.2f} / {base[f'fam/{f}/leak']:.2f}" for f in fams) + " |")
        for label, row in summary.items():
            v = row["values"]
            cells = []
            for f in fams:
                a, lk = v.get(f"fam/{f}/acc", {}), v.get(f"fam/{f}/leak", {})
                cells.append(f"{a.get('mean', float('nan')):.2f} / "
                             f"{lk.get('mean', float('nan')):.2f}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Columns: *forget acc* = likelihood-choice accuracy on the forget probes the "
              "base model knows (chance shown in the base row); *leak* = share of greedy "
              "generations matching a leak pattern; *neighbour/utility acc* = accuracy on the "
              "known neighbour/utility probes; *KL neighbours* = KL(base ‖ after) per content "
              "token on neighbour sequences; *collapsed* = cells the collapse verdict called "
              "degenerate; *relearn recovered* = share of the forget accuracy gap that a "
              "full-parameter fine-tune on a quarter of the known forget facts brings back on "
              "the rest; *train s* = wall time of the method (training and its early-stopping "
              "checks, or setup); *peak MB* = peak memory while the method ran, above the loaded "
              "base model and one working copy of it (CPU: sampled RSS after handing freed "
              "memory back to the OS; CUDA: allocated); *artifact* = what ships (adapter "
              "files, changed weights, or the mask). Values: mean ± sample sd over seeds.", ""]
    return "\n".join(lines)


def tradeoff_plot(summary: dict[str, dict], cells: list[dict], base: dict[str, float],
                  path: Path) -> None:
    """Forget accuracy vs neighbour accuracy and vs neighbour KL: one point per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, row) in enumerate(summary.items()):
        v = row["values"]
        color = colors[n % len(colors)]
        seeds = [cell_values(c) for c in cells if c["label"] == label]
        for ax, key in zip(axes, ("neighbor_acc", "kl_neighbor"), strict=True):
            ax.scatter([s["forget_acc"] for s in seeds], [s[key] for s in seeds], color=color,
                       alpha=0.3, s=14)
            text = label.replace("$", r"\$")  # a "$" in a label is text, not mathtext
            ax.errorbar(v["forget_acc"]["mean"], v[key]["mean"], xerr=v["forget_acc"]["sd"],
                        yerr=v[key]["sd"], fmt="o", color=color, label=text, capsize=3)
            ax.annotate(text, (v["forget_acc"]["mean"], v[key]["mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points", color=color)
    for ax in axes:
        ax.axvline(base["chance"], color="grey", ls="--", lw=1)
        ax.set_xlabel("forget known accuracy after (dashed: chance)")
    axes[0].set_ylabel("neighbour known accuracy after (higher = kept)")
    axes[1].set_ylabel("KL(base ‖ after) on neighbours (lower = better)")
    kls = [c for c in (cell_values(c)["kl_neighbor"] for c in cells) if c == c]
    if kls and min(kls) > 0:
        axes[1].set_yscale("log")
    else:
        axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Forgetting vs retention: one point per method (mean ± sd over seeds)")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def machine_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if not torch.cuda.is_available():
        from aglora.runtime.hostspeed import speed_index
        info["host_speed"] = speed_index()
    try:
        info["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _session_note(shared: dict) -> str:
    """' (this session: X min wall, N cells at a time)' when the bench ran cells in parallel."""
    jobs = shared.get("jobs", 1)
    if jobs <= 1 or "session_seconds" not in shared:
        return ""
    return (f" (this session: {shared['session_seconds'] / 60:.1f} min of wall time, "
            f"{jobs} cells at a time)")


def write_outputs(out: Path, cfg: BenchConfig, entries: list[MethodEntry], seeds: int,
                  shared: dict, cells: list[dict]) -> dict:
    """bench.json/bench.md/plot from `cells`, the finished cells of the selected entries."""
    if not cells:
        raise AgloraError(f"{out}: no finished cell to tabulate")
    summary = summarise(cells)
    base = base_values(cells)
    wall = sum(c["cost"]["method_seconds"] + c["cost"]["eval_seconds"]
               + c["cost"]["relearn_seconds"] for c in cells)
    run = cfg.settings.run
    header = (f"# Benchmark: concept `{run.concept}`, {len(summary)} settings, up to {seeds} "
              f"seeds, step budget {run.train.max_steps} (batch {run.train.batch_size}), "
              f"{len(cells)} cells; sum of cell wall times {wall / 60:.1f} min"
              f"{_session_note(shared)}, shared "
              f"record+score {shared.get('record_seconds', float('nan')):.0f} s and base "
              f"evaluation {shared.get('base_eval_seconds', float('nan')):.0f} s")
    md = bench_markdown(summary, base, header)
    write_text(out / "bench.md", md)
    result = {"config": {"raw": cfg.raw, "entries": [dataclasses.asdict(e) for e in entries],
                         "seeds": seeds},
              "machine": machine_info(), "shared": shared, "base": base, "summary": summary,
              "cells": [{k: v for k, v in c.items() if k != "train"} | {
                  "train": {k: v for k, v in c["train"].items() if k != "history"}}
                  for c in cells]}
    write_json(out / "bench.json", result)
    tradeoff_plot(summary, cells, base, out / "tradeoff.png")
    return result


def _seeds(entry: MethodEntry, seeds: int) -> list[int]:
    return list(range(seeds)) if METHODS[entry.method].seeded else [0]


def _cached_seconds(path: Path) -> float:
    """The seconds a shared step took, from its cache entry (NaN when there is none)."""
    entry, _ = read_result(path)
    value = (entry or {}).get("value")
    return float(value.get("seconds", float("nan"))) if isinstance(value, dict) else float("nan")
