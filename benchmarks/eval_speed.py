"""Time the evaluation of a run's probe set, part by part, and print a table.

    python benchmarks/eval_speed.py runs/demo [--set eval.KEY=VALUE ...]

Loads the run's base model and adapter and times each part of `aglora.evaluate.evaluate` with
the run's eval settings: the base side (likelihood scoring, generation), folding the adapter into
a copy of the weights, the after side, and KL on neighbour and general prompts. "cold" is a first
evaluation; "warm" a rerun, which reads the base side from the cache (`eval.cache_base`).
Issue 3's target for the demo probe set on 2 CPU cores is 180 s.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from aglora.config import apply_overrides, config_from_dict, config_to_dict
from aglora.evaluate import kl_between, measure
from aglora.lora import adapter_disabled, merged_copy
from aglora.pipeline import eval_probes, reopen_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE",
                        help="time with other eval settings than the run's")
    args = parser.parse_args()
    ctx = reopen_run(args.run_dir)
    if args.set:
        ctx.cfg = config_from_dict(apply_overrides(config_to_dict(ctx.cfg), args.set))
    cfg = ctx.cfg.eval
    model, tok = ctx.adapted()
    probes = eval_probes(ctx)
    gen_mask = [p.split in ("forget", "neighbor") for p in probes]
    no_gen = [False] * len(probes)
    gen_probes = [p.__class__(**{**p.to_dict(), "distractors": []})
                  for p, g in zip(probes, gen_mask, strict=True) if g]
    rows: list[tuple[str, float, bool]] = []  # (part, seconds, part of a warm rerun)

    def timed(name: str, warm: bool, fn) -> object:
        start = time.time()
        out = fn()
        rows.append((name, time.time() - start, warm))
        return out

    with adapter_disabled(model):
        timed("likelihood (base)", False, lambda: measure(model, tok, probes, cfg, no_gen, "base"))
        timed("generation (base)", False, lambda: measure(model, tok, gen_probes, cfg,
                                                          [True] * len(gen_probes), "base"))
    after = timed("fold adapter (copy)", True, lambda: merged_copy(model))
    timed("likelihood (after)", True, lambda: measure(after, tok, probes, cfg, no_gen, "after"))
    timed("generation (after)", True, lambda: measure(after, tok, gen_probes, cfg,
                                                      [True] * len(gen_probes), "after"))
    kl_probes = [p for p in probes if p.split == "neighbor"
                 or (p.split == "utility" and p.family == "general")]
    timed("KL (neighbour, general)", True,
          lambda: kl_between(after, model, tok, kl_probes, cfg.batch_size))
    cold = sum(t for _, t, _ in rows)
    warm = sum(t for _, t, w in rows if w)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads; probes: {len(probes)} "
          f"({len(gen_probes)} generating), n_samples {cfg.n_samples} on {cfg.sample_splits}, "
          f"max_new_tokens {cfg.max_new_tokens}, batch {cfg.batch_size}, "
          f"generate batch {cfg.generate_batch_size or cfg.batch_size}")
    print(f"{'part':<26}{'seconds':>10}")
    for name, t, _ in rows:
        print(f"{name:<26}{t:>10.1f}")
    print(f"{'total, cold':<26}{cold:>10.1f}   ({len(probes) / cold:.2f} probes/s)")
    print(f"{'total, warm (base cached)':<26}{warm:>10.1f}")


if __name__ == "__main__":
    main()
