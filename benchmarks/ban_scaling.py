"""How the cost of `aglora ban` grows with the number of banned titles: bans of 1, 3, 10, 20.

    python benchmarks/ban_scaling.py [--sizes 1,3,10,20] [--out runs/ban-scaling]
        [--items-file PATH] [--budget-minutes 40] [--set KEY=VALUE ...] [--model M]
        [--catalog CSV]

The titles are the base model's most exposed ones (`aglora recommend --survey`'s library call,
`aglora.recommend.show.survey`, on the ban's held-apart prompts), or the lines of
`--items-file`; the ban of k titles takes the first k, so each ban holds the smaller ones. Each
ban is an ordinary `aglora ban` run in `OUT/ban-K` with the default `ban.yaml` (plus `--set`);
a rerun reuses finished runs. Before a size, its time is extrapolated linearly in the number of
titles from the last size run; a size whose estimate exceeds `--budget-minutes` is skipped and
the table says so.

Prints a Markdown table (banned items -> steps, training minutes, the early-stopping checks'
share of training time, evaluation minutes, the highest exposure of one banned title, the worst
median rank, NDCG@10 of the other titles, the validity ratio of the other items, adapter size,
and the issue's lines per row) and writes `OUT/ban_scaling.{md,json,png}`; the figure plots the
minutes of training, checks, evaluation and the whole run against the number of titles.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from pathlib import Path

LINES = {"exposure": 0.02, "ndcg10": 0.90, "validity_ratio": 0.95,
         "train_minutes_3": 5.0, "total_minutes_20": 30.0, "check_share": 0.20}


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def scaling_row(run_dir: Path, n_items: int, wall_seconds: float | None = None) -> dict:
    """One table row from a finished ban's run directory (train_history.json, metrics.json,
    state.json); `wall_seconds`: the measured time of the whole `aglora ban` call."""
    hist, metrics = _read(run_dir / "train_history.json"), _read(run_dir / "metrics.json")
    stages = _read(run_dir / "state.json").get("wall_seconds", {})
    rec = metrics.get("recommendation", {})
    titles = rec.get("banned_titles", {})
    others = rec.get("validity_others", {})
    n_titles = rec.get("n_titles", float("nan"))
    train_s = stages.get("train", hist.get("seconds", float("nan")))
    eval_s = stages.get("eval", float("nan")) + rec.get("seconds", float("nan"))
    checks = hist.get("check_seconds", float("nan"))
    final = hist.get("final_check") or {}
    return {
        "items": n_items, "titles": rec.get("banned", []), "steps": hist.get("steps"),
        "stopped_early": hist.get("stopped_early"),
        "train_minutes": train_s / 60, "check_share": checks / hist.get("seconds", math.nan),
        "check_minutes": checks / 60, "eval_minutes": eval_s / 60,
        "total_minutes": (wall_seconds if wall_seconds is not None
                          else sum(stages.values()) + rec.get("seconds", 0.0)) / 60,
        "exposure_max": max((t["exposure"]["after"] for t in titles.values()), default=math.nan),
        "exposure_any": rec.get("exposure", {}).get("after", math.nan),
        "worst_rank": rec.get("worst_median_rank_after", math.nan), "n_titles": n_titles,
        "titles_meeting_both": sum(t["exposure"]["after"] <= LINES["exposure"]
                                   and t["median_rank"]["after"] > n_titles / 2
                                   for t in titles.values()),
        "ndcg10": rec.get("ndcg10", {}).get("mean", math.nan),
        "validity_ratio": (others["after"] / others["base"] if others.get("base")
                           else math.nan),
        "validity_ci95": others.get("ratio_ci95"),
        "adapter_bytes": metrics.get("adapter_bytes", hist.get("adapter_bytes")),
        "final_check": {k: final.get(k) for k in ("answers_at_goal", "answers", "accuracy")}
        if final else None,
    }


def lines_met(row: dict) -> list[str]:
    """The issue's lines this row misses (empty: all met)."""
    missed = []
    if not row["exposure_max"] <= LINES["exposure"]:
        missed.append("exposure")
    if not row["worst_rank"] > row["n_titles"] / 2:
        missed.append("rank")
    if not row["ndcg10"] >= LINES["ndcg10"]:
        missed.append("NDCG@10")
    if not row["validity_ratio"] >= LINES["validity_ratio"]:
        missed.append("validity")
    if not row["check_share"] <= LINES["check_share"]:
        missed.append("check share")
    if row["items"] == 3 and not row["train_minutes"] <= LINES["train_minutes_3"]:
        missed.append("3-title training time")
    if row["items"] == 20 and not (row["train_minutes"] + row["eval_minutes"]
                                   <= LINES["total_minutes_20"]):
        missed.append("20-title train+eval time")
    return missed


def _mb(n: float | None) -> str:
    return f"{n / 1e6:.2f} MB" if n else "–"


def table(rows: list[dict], skipped: dict[int, str] | None = None) -> str:
    """The Markdown table of the rows (and a line per skipped size)."""
    head = ("| banned items | steps | training min | checks, share of training | eval min | "
            "whole run min | exposure after, max over titles (any title) | worst median rank | "
            "titles meeting both lines | NDCG@10 of the rest | validity ratio of the other items "
            "[95 % interval] | adapter size | lines missed |")
    out = [head, "| " + " | ".join("---" for _ in range(head.count("|") - 1)) + " |"]
    for r in rows:
        ci = r.get("validity_ci95") or [math.nan, math.nan]
        stop = "" if r["stopped_early"] else " (cap)"
        out.append(
            f"| {r['items']} | {r['steps']}{stop} | {r['train_minutes']:.1f} | "
            f"{100 * r['check_share']:.0f} % | {r['eval_minutes']:.1f} | "
            f"{r['total_minutes']:.1f} | {100 * r['exposure_max']:.1f} % "
            f"({100 * r['exposure_any']:.1f} %) | {r['worst_rank']:g} of {r['n_titles']} | "
            f"{r['titles_meeting_both']} of {r['items']} | {r['ndcg10']:.2f} | "
            f"{r['validity_ratio']:.2f} × [{ci[0]:.2f}, {ci[1]:.2f}] | "
            f"{_mb(r['adapter_bytes'])} | {', '.join(lines_met(r)) or 'none'} |")
    for k, why in (skipped or {}).items():
        out.append(f"| {k} | skipped: {why} |" + " |" * (head.count("|") - 3))
    return "\n".join(out)


def figure(rows: list[dict], path: Path) -> Path:
    """Minutes of training, checks, evaluation and the whole run against the number of titles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [r["items"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("total_minutes", "whole run"), ("train_minutes", "training"),
                       ("check_minutes", "of which checks"), ("eval_minutes", "evaluation")):
        ax.plot(xs, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("banned titles in one adapter")
    ax.set_ylabel("minutes")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def survey_titles(n: int, out: Path, args: argparse.Namespace) -> list[str]:
    """The base model's `n` most exposed catalogue titles on the ban's held-apart prompts."""
    from aglora.recommend.show import survey
    result = survey(args.catalog, args.model, args.overrides, top=n, out=out)
    return [r["title"] for r in result["top"]]


def machine() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    import torch
    return (f"{platform.machine()}, {model}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def _estimate(rows: list[dict], k: int) -> float:
    """Minutes of a ban of k titles, linear in titles from the last run (0 before any)."""
    return rows[-1]["total_minutes"] * k / rows[-1]["items"] if rows else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,10,20", help="comma-separated numbers of titles")
    parser.add_argument("--out", default="runs/ban-scaling", help="directory of the runs")
    parser.add_argument("--items-file", help="titles to ban, one per line (default: the survey)")
    parser.add_argument("--budget-minutes", type=float, default=40.0,
                        help="skip a size whose extrapolated time exceeds this")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to every ban")
    parser.add_argument("--model", help="base model (default: the embedded one)")
    parser.add_argument("--catalog", help="catalogue CSV (default: the shipped one)")
    args = parser.parse_args(argv)
    from aglora.cli import setup_logging
    setup_logging()  # progress lines to the sys.stdout of the moment, as the CLI prints them
    from aglora.recommend.ban import run_ban
    from aglora.runtime.hostspeed import speed_line
    sizes = sorted(int(s) for s in args.sizes.split(","))
    out = Path(args.out)
    if args.items_file:
        from aglora.recommend.items import read_items_file
        titles = [a.title for a in read_items_file(args.items_file)]
    else:
        titles = survey_titles(max(sizes), out, args)
    print(f"titles, most exposed first: {titles}")
    rows: list[dict] = []
    skipped: dict[int, str] = {}
    for k in sizes:
        if k > len(titles):
            skipped[k] = f"only {len(titles)} titles"
            continue
        estimate = _estimate(rows, k)
        if estimate > args.budget_minutes:
            skipped[k] = (f"estimated {estimate:.0f} min (linear from {rows[-1]['items']}) > "
                          f"budget {args.budget_minutes:g} min")
            continue
        run_dir = out / f"ban-{k}"
        done = "recommendation" in _read(run_dir / "metrics.json")
        start = time.time()
        run_ban(titles[:k], run_dir, args.catalog, args.model, args.overrides)
        wall = time.time() - start
        if done:  # a finished run, reopened: its first measured time, if recorded
            wall = _read(out / "ban_scaling.json").get("wall_seconds", {}).get(str(k))
        rows.append(scaling_row(run_dir, k, wall))
        _write(out, rows, skipped, args)
    print(speed_line())
    print(machine())
    print(table(rows, skipped))
    _write(out, rows, skipped, args)


def _write(out: Path, rows: list[dict], skipped: dict[int, str], args) -> None:
    from aglora.runtime.artifacts import write_json, write_text
    # every size's first measured time is kept: a later call with other --sizes reopens runs
    walls = _read(out / "ban_scaling.json").get("wall_seconds", {})
    walls.update({str(r["items"]): 60 * r["total_minutes"] for r in rows
                  if str(r["items"]) not in walls})
    write_json(out / "ban_scaling.json", {
        "sizes": args.sizes, "overrides": args.overrides, "rows": rows,
        "skipped": {str(k): v for k, v in skipped.items()}, "wall_seconds": walls})
    write_text(out / "ban_scaling.md", table(rows, skipped) + "\n")
    if rows:
        figure(rows, out / "ban_scaling.png")


if __name__ == "__main__":
    main()
