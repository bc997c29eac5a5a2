"""Token positions a decoder pass runs on seeded batches of a run's training items: one pass
(shared prefixes included) against length buckets (`aglora.model.forward.length_buckets`).

    python benchmarks/bucket_positions.py RUN_DIR [--batches 40] [--seed 0]

Retain batches: `batch_size` retain items drawn at random, as the training loop draws them.
Forget batches: whole contexts, eight a batch, every item on each (`train.batch_by_context`).
Prints one table; nothing is trained. RUN_DIR is any run with `train_items.jsonl`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path


def _probes(run_dir: Path):
    from aglora.concepts import Probe
    names = {f.name for f in dataclasses.fields(Probe)}
    rows = [json.loads(line) for line in (run_dir / "train_items.jsonl").open()]
    return [Probe(**{k: v for k, v in r.items() if k in names}) for r in rows]


def _positions(batch) -> tuple[int, int, bool]:
    """(one-pass positions, bucketed positions, whether a cut was taken)."""
    from aglora.model.forward import (
        PASS_TOKENS,
        _grouped_layout,
        _one_pass_tokens,
        length_buckets,
    )
    one = _one_pass_tokens(batch, _grouped_layout(batch))
    groups = length_buckets(batch)
    if groups is None:
        return one, one, False
    parts = [batch.select(g) for g in groups]
    split = sum(_one_pass_tokens(p, _grouped_layout(p)) for p in parts)
    return one, split + PASS_TOKENS * (len(groups) - 1), True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from aglora.config import ModelConfig
    from aglora.model.load import load_model
    from aglora.model.tokens import encode
    _, tok = load_model(ModelConfig())
    probes = _probes(args.run_dir)
    retain = [p for p in probes if p.split != "forget"]
    contexts: dict[str, list] = {}
    for p in probes:
        if p.split == "forget":
            contexts.setdefault(p.context, []).append(p)
    rng = random.Random(args.seed)
    draws = {"retain": [rng.sample(retain, args.batch_size) for _ in range(args.batches)],
             "forget": [[p for c in rng.sample(list(contexts), min(8, len(contexts)))
                         for p in contexts[c]] for _ in range(args.batches)]}
    print("| batches | count | real tokens | one pass | length buckets | cuts taken |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, batches in draws.items():
        real = one = split = cuts = 0
        for items in batches:
            batch = encode(tok, items, [p.answer or "" for p in items])
            a, b, cut = _positions(batch)
            real += int(batch.attention_mask.sum())
            one, split, cuts = one + a, split + b, cuts + cut
        n = len(batches)
        print(f"| {name} | {n} | {real / n:.1f} | {one / n:.1f} | {split / n:.1f} | {cuts} |")


if __name__ == "__main__":
    main()
