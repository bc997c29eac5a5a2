"""Per banned title of a finished ban, on its training items (never an evaluation probe): the
base model's margin of the title over the best of the item's distractors, the margin after,
the title's log-prob drop (NPO's x with the base as the reference) and the share of items the
title still wins. It shows which titles stall short of the goal and how far each one fell.

    python benchmarks/title_margins.py RUN_DIR [RUN_DIR ...]

Margins and drops are means over each title's list-prompt items (summed log-probs of the whole
title, as the early-stopping checks score them), in nats. Prints one Markdown table per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def title_rows(run: Path) -> list[dict]:
    from aglora.concepts import probe_from_dict
    from aglora.config import ModelConfig
    from aglora.model.adapter import adapter_disabled, load_adapter
    from aglora.model.likelihood import margin, score_options
    from aglora.model.load import load_model

    rows = [json.loads(line) for line in (run / "train_items.jsonl").open()]
    items = [probe_from_dict({k: v for k, v in r.items() if k != "role"}, str(run))
             for r in rows if r["split"] == "forget" and r.get("distractors")]
    model, tok = load_model(ModelConfig())
    pm = load_adapter(model, run / "adapter")
    after = score_options(pm, tok, items, batch_size=64)
    with adapter_disabled(pm):
        base = score_options(pm, tok, items, batch_size=64)
    by: dict[str, list[tuple[float, float, float]]] = {}
    for p, b, a in zip(items, base, after, strict=True):
        by.setdefault(p.answer or "", []).append((margin(b), margin(a), a[0] - b[0]))
    out = []
    for title, vals in by.items():
        n = len(vals)
        out.append({"title": title, "items": n,
                    "base_margin": sum(v[0] for v in vals) / n,
                    "after_margin": sum(v[1] for v in vals) / n,
                    "drop": sum(v[2] for v in vals) / n,
                    "wins_after": sum(v[1] > 0 for v in vals) / n})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    for run in args.runs:
        print(f"\n{run}\n")
        print("| title | items | base margin | margin after | drop of the title | still wins |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in title_rows(run):
            print(f"| {r['title']} | {r['items']} | {r['base_margin']:.2f} | "
                  f"{r['after_margin']:.2f} | {r['drop']:.2f} | {r['wins_after']:.2f} |")


if __name__ == "__main__":
    main()
