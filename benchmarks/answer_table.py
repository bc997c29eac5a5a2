"""What the forget answers are, across runs: one row per run directory.

    python benchmarks/answer_table.py runs/demo runs/other ...

Each run's generations (`probe_results.jsonl`) are labelled again with the current classifier
(`aglora.pipeline.eval.metrics.answers_metrics`, the same function the eval stage calls), so runs
made before a change to the classifier compare on equal terms; the accuracies come from the
run's `metrics.json`. Prints a Markdown table: forget known accuracy, neighbours, utility, the
after shares of the forget answers (refusal, other, mangled, leak, looping), forget repetition
base -> after, the base model's NLL of the forget answers, and the refusal share on neighbour and
utility probes (over-refusal).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from aglora.concepts import Probe, load_concept
from aglora.pipeline.eval.metrics import answers_metrics
from aglora.pipeline.eval.sides import SideResult
from aglora.runtime.format import fmt, fmt_pct

FIELDS = set(Probe.__dataclass_fields__)


def run_row(run: Path) -> list[str]:
    records = [json.loads(x) for x in (run / "probe_results.jsonl").read_text().splitlines()
               if x.strip()]
    metrics = json.loads((run / "metrics.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    concept = load_concept(config["concept"])
    probes = [Probe(**{k: v for k, v in r.items() if k in FIELDS}) for r in records]
    sides = [SideResult([], [], [r[f"{s}_generations"] for r in records])
             for s in ("base", "after")]
    answers = answers_metrics(probes, *sides, concept.leak_patterns, concept.name,
                              concept.refusals)["splits"]
    f = answers["forget"]
    shares = f["after"]["shares"]
    splits = metrics["splits"]
    nll = (metrics.get("answers", {}).get("splits", {}).get("forget", {}).get("base_nll") or {})
    return [run.name, fmt(splits["forget"]["known_accuracy"]["after"]),
            fmt(splits["neighbor"]["known_accuracy"]["after"]),
            fmt(splits["utility"]["known_accuracy"]["after"]),
            *[fmt_pct(shares[k], 0) for k in ("refusal", "other", "mangled", "leak", "looping")],
            f"{fmt(f['base']['repetition'])} → {fmt(f['after']['repetition'])}",
            f"{fmt(nll.get('base'))} → {fmt(nll.get('after'))}",
            fmt_pct(answers.get("neighbor", {}).get("after", {}).get("shares", {}).get("refusal"),
                    0),
            fmt_pct(answers.get("utility", {}).get("after", {}).get("shares", {}).get("refusal"),
                    0)]


HEADER = ["run", "forget acc", "neighbours", "utility", "refusal", "other", "mangled", "leak",
          "looping", "forget repetition", "base NLL of answers", "refusal neighbours",
          "refusal utility"]


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python benchmarks/answer_table.py RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    print("| " + " | ".join(HEADER) + " |")
    print("|" + " --- |" * len(HEADER))
    for arg in argv:
        print("| " + " | ".join(run_row(Path(arg))) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
