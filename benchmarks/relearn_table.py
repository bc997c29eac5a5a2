"""The robustness attacks across runs: one row per run directory, one figure of the curves.

    python benchmarks/relearn_table.py runs/a runs/b ... [--labels a,b,...] [--figure OUT.png]

Reads each run's `metrics.json` and `train_history.json` (runs made with the attacks on:
`eval.relearn_curve`, `eval.relearn_benign`, `eval.relearn_in_context`) and prints a Markdown
table: training steps and stop reason, forget / neighbour / utility known accuracy after, KL on
neighbours, the verdict, the relearned accuracy and recovered share (accuracy; margin in
brackets) at every checkpoint of the relearning curve, the benign curve's recovered shares and
the in-context attack's. `--figure` draws the recovered share of the accuracy gap against the
fine-tuning steps, relearning (solid) and benign (dashed), one colour per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f} %"


def run_row(run: Path, label: str) -> str:
    m = json.loads((run / "metrics.json").read_text())
    h = json.loads((run / "train_history.json").read_text())
    acc = {s: m["splits"][s]["known_accuracy"]["after"] for s in ("forget", "neighbor", "utility")}
    verdict = m["verdict"]
    rl, rb, ic = (m.get(k) or {} for k in ("relearn", "relearn_benign", "relearn_in_context"))
    curve, benign = rl.get("curve", []), rb.get("curve", [])
    stop = "goal" if h.get("stopped_early") else "cap"
    cells = [label, f"{h['steps']} ({stop})", f"{acc['forget']:.3f}", f"{acc['neighbor']:.3f}",
             f"{acc['utility']:.3f}", f"{m['kl_neighbor']:.4f}",
             f"{verdict['forgetting']['label']}; {verdict['kept']['label']}",
             " / ".join(f"{c['known_accuracy']:.2f}" for c in curve) or "–",
             " / ".join(f"{_pct(c['recovered_share'])} ({_pct(c['recovered_share_margin'])})"
                        for c in curve) or "–",
             " / ".join(_pct(c["recovered_share"]) for c in benign) or "–",
             (f"{ic['known_accuracy']['after_with_context']:.2f}, "
              f"{_pct(ic['recovered_share'])}" if "known_accuracy" in ic else "–")]
    return "| " + " | ".join(cells) + " |"


def header(runs: list[Path]) -> str:
    steps = next((" / ".join(str(c["steps"]) for c in
                             json.loads((r / "metrics.json").read_text())["relearn"]["curve"])
                  for r in runs if "relearn" in json.loads((r / "metrics.json").read_text())),
                 "K")
    cols = ["run", "steps (stop)", "forget", "neighbours", "utility", "KL", "verdict",
            f"relearned accuracy after {steps} steps", f"recovered share after {steps}",
            f"benign: recovered after {steps}", "in context: accuracy, recovered"]
    return "| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols)


def figure(runs: list[Path], labels: list[str], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
        m = json.loads((run / "metrics.json").read_text())
        colour = f"C{i}"
        for key, style, suffix in (("relearn", "-", ""), ("relearn_benign", "--", ", benign")):
            curve = (m.get(key) or {}).get("curve", [])
            if curve:
                ax.plot([c["steps"] for c in curve], [c["recovered_share"] for c in curve],
                        style, marker="o", color=colour, label=label + suffix)
    ax.axhline(0.2, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("fine-tuning steps of the attack")
    ax.set_ylabel("recovered share of the accuracy gap")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--labels", help="comma-separated row labels (default: directory names)")
    parser.add_argument("--figure", type=Path, help="where to draw the curves (PNG)")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels has {len(labels)} labels for {len(args.runs)} runs")
    missing = [str(r) for r in args.runs if not (r / "metrics.json").is_file()]
    if missing:
        parser.error(f"no metrics.json in {', '.join(missing)}: give finished run directories")
    print(header(args.runs))
    for run, label in zip(args.runs, labels, strict=True):
        print(run_row(run, label))
    if args.figure:
        figure(args.runs, labels, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
